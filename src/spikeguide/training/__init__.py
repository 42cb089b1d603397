"""Training: from a config to a trained run (data, model, method, teacher, Trainer, checkpoints).

Submodules are imported where they are used, so that ``config`` can read the allowed values
of :mod:`.optim` without loading the Trainer.
"""
