"""Profiling: ``complexity`` (params and the one MAC counter), ``counters`` (fvcore, thop,
ptflops cross-checks), ``latency`` (torch and onnxruntime timing), ``inference`` (BN
folding), ``core`` (``profile_spec`` / ``profile_table``: all of it for one spec or a paper
table), ``report`` (printed tables, CSV, JSON). ``python -m runners.profile`` is the
command line.
"""
