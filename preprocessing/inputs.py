"""The inputs of a preprocessing job: a file, a folder, a glob or a URL (fsspec), listed and fetched."""

from __future__ import annotations

import glob as globlib
import os
import shutil
from pathlib import Path

from preprocessing import shards

_SKIP_SUFFIXES = {".json", ".jsonl", ".md"}  # sidecar files in an input folder are not inputs


def list_inputs(spec: str) -> list[str]:
    """A folder (recursive), a glob, a list file (one path/URL a line) or a single file/URL -> sources."""
    if "://" in spec and not spec.startswith("file://"):
        import fsspec

        fs, path = fsspec.core.url_to_fs(spec)
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.find(path)
        else:
            found = [path]
        return sorted(fs.unstrip_protocol(p) for p in found if Path(p).suffix.lower() not in _SKIP_SUFFIXES)
    spec = spec.removeprefix("file://")
    p = Path(spec)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                 and f.suffix.lower() not in _SKIP_SUFFIXES]
        return sorted(str(f.resolve()) for f in files)
    if any(c in spec for c in "*?["):
        return sorted(str(Path(f).resolve()) for f in globlib.glob(spec, recursive=True) if Path(f).is_file())
    if p.is_file() and p.suffix.lower() in {".txt", ".lst", ".list"}:
        lines = [ln.strip() for ln in p.read_text().splitlines()]
        return sorted({ln if "://" in ln else str((p.parent / ln).resolve()) for ln in lines
                       if ln and not ln.startswith("#")})
    if p.is_file():
        return [str(p.resolve())]
    raise FileNotFoundError(f"--input {spec!r}: not a folder, glob, list file or file")


def localize(source: str, cache_dir: Path) -> str:
    """Remote (fsspec) sources are copied once into ``cache_dir`` so decoding can seek; local paths pass."""
    if "://" not in source or source.startswith("file://"):
        return source.removeprefix("file://")
    import fsspec

    target = cache_dir / (shards.video_id_for(source) + Path(source).suffix)
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        with fsspec.open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, target)
    return str(target)
