"""The commands (one package per verb, each with a ``__main__.py``) and what they share.

Importing this package lets idle OpenMP threads sleep (``runners.cpus``): it must happen
before torch loads, and every command imports ``runners`` first.
"""

from runners.cpus import configure_openmp

configure_openmp()
