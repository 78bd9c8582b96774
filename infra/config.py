"""Config loading: dataclass defaults <- YAML file(s) <- CLI dot-list overrides.

Every component owns a dataclass config next to its code (``model/config.py``,
``training/config.py``, ...). :class:`VExpressConfig` joins them into one tree.
A YAML file may name a ``base:`` YAML (path relative to itself); the base is
merged first, so a stage-II config reads as "the stage-I config plus these
named changes".

Validation lives in each dataclass's ``__post_init__`` and raises
``ValueError`` naming the field; :func:`load_config` re-raises it with the
dotted path of the offending section so the user sees ``train.lr`` rather
than ``lr``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file or override could not be applied (names the file/key)."""


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[Any]:
    """Return the OmegaConf nodes of ``path`` and its ``base:`` ancestors, base first."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base:' chain {[str(p) for p in seen]}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        node = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    base = node.pop("base", None) if node is not None else None
    chain: list[Any] = []
    if base:
        chain = _read_yaml_chain((path.parent / str(base)), seen + (path,))
    chain.append(node)
    return chain


def resolve_config_path(name_or_path: str | Path) -> Path:
    """Accept a path, or a preset name like ``tiny/stage1`` under ``configs/``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = CONFIG_ROOT / (str(name_or_path) + ("" if str(name_or_path).endswith(".yaml") else ".yaml"))
    if candidate.is_file():
        return candidate
    raise ConfigError(f"{name_or_path}: no such config file or preset (looked in {CONFIG_ROOT})")


def load_config(
    cls: type[T],
    yaml_paths: Sequence[str | Path] | str | Path | None = None,
    overrides: Sequence[str] | None = None,
) -> T:
    """Build ``cls`` from its defaults, then YAML file(s), then ``key.sub=value`` overrides."""
    if isinstance(yaml_paths, (str, Path)):
        yaml_paths = [yaml_paths]
    schema = OmegaConf.structured(cls)
    layers: list[Any] = []
    for y in yaml_paths or []:
        layers.extend(_read_yaml_chain(resolve_config_path(y)))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(schema, *layers)
        presets = _preset_layers(merged)
        if presets:  # defaults <- named presets <- YAML <- CLI: an explicit value always wins over a preset
            merged = OmegaConf.merge(schema, *presets, *layers)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from exc
    return to_object(merged)


def _preset_layers(merged: Any) -> list[Any]:
    """For every section whose dataclass has a ``PRESETS`` mapping and a ``preset`` field, the chosen preset's
    values as a config layer (e.g. ``inference.preset=quality``)."""
    layers = []
    for key in merged:
        node = merged[key]
        presets = getattr(OmegaConf.get_type(node), "PRESETS", None) if OmegaConf.is_config(node) else None
        if not presets or "preset" not in node:
            continue
        name = node.preset
        if name not in presets:
            raise ConfigError(f"{key}.preset: unknown preset {name!r}; choose one of {sorted(presets)}")
        layers.append(OmegaConf.create({key: presets[name]}))
    return layers


def to_object(node: Any) -> Any:
    """Instantiate dataclasses from an OmegaConf node (runs ``__post_init__``)."""
    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ValueError):
            key = getattr(exc, "full_key", None) or ""
            raise ValueError(f"{key + ': ' if key else ''}{cause}") from exc
        raise ConfigError(str(exc).splitlines()[0]) from exc


def dump_config(cfg: Any) -> str:
    """YAML text of a config dataclass; ``load_config(type(cfg), file)`` gives it back."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dump_config(cfg))
    tmp.replace(path)
    return path


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flat ``{"train.lr": 1e-5, ...}`` view, e.g. for MLflow params."""
    out: dict[str, Any] = {}
    items = dataclasses.asdict(cfg).items() if dataclasses.is_dataclass(cfg) else cfg.items()
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check(cond: bool, field: str, message: str) -> None:
    """Raise ``ValueError("<field>: <message>")`` unless ``cond``; for ``__post_init__``."""
    if not cond:
        raise ValueError(f"{field}: {message}")
