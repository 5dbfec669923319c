"""Converting the open reimplementations' checkpoints (CoinCheung/BiSeNet, mmsegmentation)
into toolkit checkpoints; ``python -m runners.convert`` is the command line."""
