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
import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")
log = logging.getLogger(__name__)

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
    saved: str | Path | None = None,
) -> T:
    """Build ``cls`` from its defaults, then ``saved``, then YAML file(s), then ``key.sub=value`` overrides.

    ``saved`` is a config written by :func:`save_config` (e.g. beside a checkpoint): only its values that differ
    from its presets' are applied as explicit, so ``inference.preset=fast`` on the command line still changes the
    sampling settings the saved run took from its preset. Unknown keys fail naming the key and the nearest valid
    one."""
    if isinstance(yaml_paths, (str, Path)):
        yaml_paths = [yaml_paths]
    schema = OmegaConf.structured(cls)
    keys = valid_keys(schema)
    layers: list[Any] = []
    if saved is not None:
        layers.extend(_explicit_changes(schema, _without_unknown(_read_yaml_chain(Path(saved)), keys, saved)))
    for y in yaml_paths or []:
        path = resolve_config_path(y)
        layers.extend(_checked(_read_yaml_chain(path), keys, str(path)))
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"{bad[0]}: an override looks like key.sub=value (e.g. train.lr=1e-5)")
        for o in overrides:
            check_key(o.split("=", 1)[0].strip(), keys)
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


# ------------------------------------------------------------------------------------------ key checks
def valid_keys(schema: Any) -> tuple[set[str], set[str]]:
    """(every dotted key of the schema, sections and leaves; the keys of free-form mappings such as
    ``tracking.tags``, below which any key is valid)."""
    keys: set[str] = set()
    free: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        for k in node:
            child = node._get_node(k)
            key = f"{prefix}{k}"
            keys.add(key)
            if OmegaConf.is_dict(child):
                if dataclasses.is_dataclass(OmegaConf.get_type(child)):
                    walk(child, key + ".")
                else:
                    free.add(key)

    walk(schema, "")
    return keys, free


def nearest_key(key: str, keys: set[str]) -> str:
    """The valid key most like ``key``: same last name first (``crop_size`` -> ``preprocess.crop_size``), then
    the closest spelling, preferring ``key``'s own section."""
    leaf = key.rsplit(".", 1)[-1]
    same_leaf = sorted(k for k in keys if k.rsplit(".", 1)[-1] == leaf)
    if same_leaf:
        return same_leaf[0]
    section = key.split(".", 1)[0] + "."
    pool = sorted(k for k in keys if k.startswith(section)) or sorted(keys)
    return max(pool, key=lambda k: (difflib.SequenceMatcher(None, key, k).ratio(),
                                    difflib.SequenceMatcher(None, leaf, k.rsplit(".", 1)[-1]).ratio()))


def check_key(key: str, valid: tuple[set[str], set[str]], where: str = "") -> None:
    """Raise ``ConfigError("<key>: no such config key; did you mean <nearest>?")`` for an unknown key."""
    keys, free = valid
    bare = key.split("[", 1)[0]
    if bare in keys or any(bare.startswith(f + ".") for f in free):
        return
    place = f"{where}: " if where else ""
    raise ConfigError(f"{place}{key}: no such config key; did you mean {nearest_key(bare, keys)}? "
                      "(every key and its default: vexpress print-config)")


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    out = []
    if not OmegaConf.is_dict(node):
        return out
    for k in node:
        key = f"{prefix}{k}"
        child = node._get_node(k)
        out.extend(_flat_keys(child, key + ".") if OmegaConf.is_dict(child) else [key])
        if OmegaConf.is_dict(child) and len(child) == 0:
            out.append(key)
    return out


def _checked(nodes: list[Any], valid: tuple[set[str], set[str]], where: str) -> list[Any]:
    for node in nodes:
        for key in _flat_keys(node):
            check_key(key, valid, where)
    return nodes


def _without_unknown(nodes: list[Any], valid: tuple[set[str], set[str]], where: str | Path) -> list[Any]:
    """A saved config written by another version of the code: keys it no longer has are dropped, with a warning."""
    dropped = []
    for node in nodes:
        for key in _flat_keys(node):
            try:
                check_key(key, valid)
            except ConfigError:
                parent, _, leaf = key.rpartition(".")
                owner = OmegaConf.select(node, parent) if parent else node
                if OmegaConf.is_dict(owner) and leaf in owner:
                    del owner[leaf]
                    dropped.append(key)
    if dropped:
        log.warning("%s: ignoring keys this version does not have: %s", where, ", ".join(dropped))
    return nodes


def _explicit_changes(schema: Any, nodes: list[Any]) -> list[Any]:
    """A saved config without the values its presets gave it (see :func:`load_config`)."""
    saved = OmegaConf.merge(*nodes) if nodes else OmegaConf.create({})
    try:
        presets = _preset_layers(OmegaConf.merge(schema, saved))
    except OmegaConfBaseException:
        return [saved]  # load_config reports the problem with the key
    if not presets:
        return [saved]
    implied = OmegaConf.merge(schema, *presets)
    for layer in presets:
        for section in layer:
            node = saved.get(section)
            if not OmegaConf.is_dict(node):
                continue
            for k in list(layer[section]):
                if k in node and node[k] == implied[section][k]:
                    del node[k]
    return [saved]


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
