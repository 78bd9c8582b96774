"""The official release's state-dict manifest: for each of the five checkpoint files, its ordered keys and shapes.

It is data shipped with the package (``model/data/``), built from the official modules on the meta device, with no
weights; docs/official-architecture.md describes what the files hold. ``python -m infra.verify --manifest`` and
the key-compatibility tests compare our modules with it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

OFFICIAL_MANIFEST = Path(__file__).resolve().parent / "data" / "vexpress_official_state_dicts.json"


@cache
def official_manifest() -> dict:
    """The parsed manifest; raises FileNotFoundError naming the file when the package data is missing."""
    if not OFFICIAL_MANIFEST.is_file():
        raise FileNotFoundError(f"{OFFICIAL_MANIFEST}: official state-dict manifest missing (package data)")
    return json.loads(OFFICIAL_MANIFEST.read_text())
