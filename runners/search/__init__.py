"""Optuna search over a search space; see ``__main__`` for how the modules fit together."""
