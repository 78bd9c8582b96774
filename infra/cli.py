"""How every command-line entry point reports a user's mistake: one line on stderr, no traceback.

Config and input problems raise ``ValueError`` (``infra.config.ConfigError``, ``InputError``, shard and checkpoint
format errors, ...) or ``OSError`` (missing files, a file where a folder belongs) with a message that names the
file or the config key; :func:`run_cli` prints that message and exits with status 2. Anything else is a bug and
keeps its traceback. ``VEXPRESS_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
EXIT_USER_ERROR = 2
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (no ANSI colour codes); its type when it has no message."""
    text = " ".join(_ANSI.sub("", str(exc)).split())
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    return text or type(exc).__name__


def run_cli(prog: str, main: Callable[[], int], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """``main()``'s exit status, or :data:`EXIT_USER_ERROR` after printing ``<prog>: error: <message>``."""
    try:
        return main()
    except USER_ERRORS + user_errors as exc:
        if os.environ.get("VEXPRESS_TRACEBACK"):
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


# ------------------------------------------------------------------------------------------ argument parsers
_PROG: list[str] = []  # set by the `vexpress` command so its subcommands' help and errors name it


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """An option's default after its help (unless empty or already said); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default in (None, False, [], "", argparse.SUPPRESS)
        if empty or "default" in text or action.option_strings == [] and action.nargs == "*":
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The parser every entry point uses: defaults in ``--help``, the config sections it reads and where their
    dataclasses live in the epilog, and argument errors on one line (exit status 2)."""

    def __init__(self, prog: str, description: str = "", sections: tuple[str, ...] = (), **kwargs) -> None:
        epilog = kwargs.pop("epilog", None) or config_epilog(sections)
        super().__init__(prog=_PROG[-1] if _PROG else prog, description=description, epilog=epilog,
                         formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def config_epilog(sections: tuple[str, ...]) -> str:
    """Where the config sections' dataclasses live, and how to see every value."""
    if not sections:
        return ""
    from infra.config_tree import section_sources

    where = section_sources()
    lines = ["config: defaults <- --config YAML <- dot-list overrides (section.key=value); the sections read here:"]
    lines += [f"  {name:<11} {where[name]}" for name in sections]
    lines.append("every key with its value: vexpress print-config [--config ...] [--checkpoint ...] [overrides]")
    return "\n".join(lines)


def override_help(example: str) -> str:
    return f"dot-list overrides, e.g. {example}"
