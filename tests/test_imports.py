"""Imports follow the data flow (docs/architecture.md), and every declared dependency is used.

The source is read, not run: every ``import`` statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("perception", "preprocessing", "training", "model", "evaluation", "infra")
# the base layer: imported by every package, importing none of them
BASE = ("infra.config", "infra.net")
# what each package may not import (module prefixes); the layers of docs/architecture.md
FORBIDDEN = {
    "perception": ("preprocessing", "model", "training", "evaluation", "infra", "deepspeed", "ray"),
    "model": ("preprocessing", "training", "evaluation", "infra", "deepspeed", "ray"),
    "preprocessing": ("model", "training", "evaluation", "infra", "deepspeed"),
    "evaluation": ("preprocessing.pipeline", "training", "deepspeed", "ray"),
}
# distributions with a role but no import of their own
NOT_IMPORTED = {
    "ninja": "builds DeepSpeed's JIT ops",
    "nvidia-ml-py": "read by MLflow's GPU system metrics",
}
IMPORT_NAME = {"opencv-python-headless": "cv2", "scikit-image": "skimage"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file; ``from . import x`` resolved against the file's package."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]  # `from x import module`
    return found


def _sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = BASE) -> list[str]:
    bad = []
    for path in _sources(package):
        for line, module in imports_of(path):
            if any(_matches(module, a) for a in allowed):
                continue
            if any(_matches(module, f) for f in forbidden):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_data_flow(package):
    assert violations(package, FORBIDDEN[package]) == []


def test_the_base_layer_imports_no_project_package():
    for module in BASE:
        path = REPO / (module.replace(".", "/") + ".py")
        bad = [m for _, m in imports_of(path) if m.split(".")[0] in PACKAGES]
        assert bad == [], f"{path.relative_to(REPO)} imports {bad}"


def test_the_walker_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The check can fail: a function-level import of a forbidden package is reported."""
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "leaky.py").write_text("def f():\n    from preprocessing.stages import probe_video\n    import ray\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    assert violations("model", FORBIDDEN["model"]) == [
        "model/leaky.py:2 imports preprocessing.stages.probe_video", "model/leaky.py:3 imports ray"]


def test_only_training_engine_calls_deepspeed_initialize():
    callers = [str(p.relative_to(REPO)) for package in PACKAGES for p in _sources(package)
               if "deepspeed.initialize(" in p.read_text()]
    assert callers == ["training/engine.py"]


def test_every_declared_dependency_is_imported():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=\[ ;]", d, maxsplit=1)[0] for d in deps]
    imported = {m.split(".")[0] for package in PACKAGES for p in _sources(package) for _, m in imports_of(p)}
    unused = [n for n in names if n not in NOT_IMPORTED and IMPORT_NAME.get(n, n.replace("-", "_")) not in imported]
    assert unused == [], f"declared in pyproject.toml but never imported: {unused}"
