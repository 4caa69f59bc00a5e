"""The MAML family on l2l's engine: MAML / FOMAML / Reptile / Meta-SGD / ANIL learners, implicit
and checkpointed MAML, ivy-style `maml_step`, `higher`-style differentiable inner optimizers,
the stateless functional forward, few-shot task tables and the `MetaTrainer` loop.

The public names are re-exported by `l2l` itself (`l2l.MAML`, `l2l.maml_step`, ...).
"""
