"""Evaluation: mIoU from a confusion matrix (``metrics``), the paper's protocol
(``predict``), checkpoints (``checkpoint``), folders of PNGs (``folder``), baselines
(``baseline``). ``python -m runners.evaluate`` is the command line; this package imports
nothing, so its ``--help`` answers without loading torch.
"""
