"""Versatile learned optimizers: meta-training over a task suite (`suite_training`), evaluation
against per-task tuned Adam on a held-out suite (`suite_evaluation`), and the shipped pretrained
optimizers (`zoo`, `l2l.pretrained`).
"""
