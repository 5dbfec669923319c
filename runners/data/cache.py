"""The toolkit's cache folder: the built-in dataset and the remembered data-check verdicts.

One folder per user, whatever folder a command runs from: ``$BISENET_LAB_CACHE`` if set,
else the platform's cache folder (``$XDG_CACHE_HOME/bisenet-lab``, default
``~/.cache/bisenet-lab``; ``~/Library/Caches/bisenet-lab`` on macOS,
``%LOCALAPPDATA%/bisenet-lab/cache`` on Windows). Everything in it can be recomputed, so it
is safe to delete. It imports no torch: the synthetic generator's worker processes use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from searchspace.atomic import write_json

CACHE_ENV = "BISENET_LAB_CACHE"
APP_NAME = "bisenet-lab"
CHECKS_DIR = "data-checks"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / APP_NAME / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_NAME
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative path.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / APP_NAME


# ------------------------------------------------------------------ data-check verdicts


def verdict_path(identity: str) -> Path:
    """The file that remembers the last check of one dataset split (``identity`` names it)."""
    name = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return cache_root() / CHECKS_DIR / f"{name}.json"


def load_verdict(identity: str, fingerprint: str) -> dict[str, Any] | None:
    """The remembered verdict if it was reached on exactly these files, else None."""
    try:
        data = json.loads(verdict_path(identity).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != fingerprint:
        return None
    return data


def save_verdict(identity: str, fingerprint: str, verdict: dict[str, Any]) -> Path | None:
    """Remember a verdict (atomically); returns its file, or None if the cache is not
    writable (the split is then simply checked again next time)."""
    path = verdict_path(identity)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {**verdict, "identity": identity, "fingerprint": fingerprint})
    except OSError:
        return None
    return path
