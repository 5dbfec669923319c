"""The result store: records built (``records``), written atomically and read back
(``store``, ``files``), and one lock per key across processes (``locks``)."""

from runners.store.locks import RunLock
from runners.store.records import build_record, dataset_section, utc_now
from runners.store.store import RunSummary, Store

__all__ = ["RunLock", "RunSummary", "Store", "build_record", "dataset_section", "utc_now"]
