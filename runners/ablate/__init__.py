"""Re-running a paper table: ``plan`` (which runs), ``run`` (do them, re-time them, dry
run); ``python -m runners.ablate`` is the command line. Each run is ``runners.experiment``."""
