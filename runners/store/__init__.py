"""The result store: records built (``records``), written atomically and read back
(``store``, ``files``), one lock per key across processes (``locks``), and the one path
that runs a set of keys under one failure policy (``run_once``)."""

from runners.store.locks import RunLock
from runners.store.records import build_record, dataset_section, utc_now
from runners.store.run_once import DEFAULT_MAX_ATTEMPTS, RunOnceOutcome, run_once
from runners.store.store import Store

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "RunLock",
    "RunOnceOutcome",
    "Store",
    "build_record",
    "dataset_section",
    "run_once",
    "utc_now",
]
