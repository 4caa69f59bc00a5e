"""`python -m l2l.versatile`: list the shipped pretrained optimizers, or ship one
(l2l.versatile.zoo)."""

from l2l.versatile import zoo

zoo.main()
