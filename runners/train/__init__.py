"""Training: ``loop.train(spec, recipe, data_source, seed, run_dir)`` and what it is made
of (``checkpoint``, ``data``, ``distributed``, ``losses``, ``optim``).
``python -m runners.train`` is the command line; this package imports nothing, so its
``--help`` answers without loading torch.
"""
