"""Every file README.md and docs/ point at exists: relative links (resolved from the page) and repository paths
in code (inline code and code blocks, resolved from the repository root, ``{a,b}`` expanded)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", REPO / "DATA.md", *sorted((REPO / "docs").rglob("*.md"))]
TOP = ("benchmarks/", "configs/", "docs/", "evaluation/", "infra/", "model/", "preprocessing/", "requirements/",
       "scripts/", "tests/", "training/")
ROOT_FILES = ("Makefile", "README.md", "DATA.md", "pyproject.toml")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[<>*…$|]|\.\.\.|XXX|step-N")


def expand(path: str) -> list[str]:
    """``zero{2,3}.json`` -> ``zero2.json``, ``zero3.json`` (nested braces are not used in the docs)."""
    parts = re.split(r"\{([^{}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def code_paths(text: str) -> list[str]:
    """Tokens of code that name a file or folder of the repository."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    inline = INLINE_CODE.findall(re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M))
    found = []
    for chunk in [*fenced, *inline]:
        for token in chunk.split():
            token = token.split("=", 1)[-1].split("::", 1)[0].strip("()[],;:'\"")
            if PLACEHOLDER.search(token) or not (token.startswith(TOP) or token in ROOT_FILES):
                continue
            found.extend(expand(token))
    return found


def missing_targets(page: Path) -> list[str]:
    text = page.read_text()
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            out.append(f"link {target}")
    for token in code_paths(text):
        if not (REPO / token).exists():
            out.append(f"path {token}")
    return out


def test_code_paths_are_found():
    sample = "see `infra/deepspeed/zero{2,3}.json` and\n```\ndeepspeed --hostfile infra/deepspeed/hostfile x\n```\n"
    assert sorted(code_paths(sample)) == ["infra/deepspeed/hostfile", "infra/deepspeed/zero2.json",
                                          "infra/deepspeed/zero3.json"]
    assert code_paths("`runs/sd15/stage3` `infra/ray/<cluster>.yaml` `model.pipeline`") == []


def test_readme_and_docs_point_at_files_that_exist():
    problems = {str(p.relative_to(REPO)): missing_targets(p) for p in PAGES}
    assert {page: found for page, found in problems.items() if found} == {}
