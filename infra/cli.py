"""How every command-line entry point reports a user's mistake: one line on stderr, no traceback.

Config and input problems raise ``ValueError`` (``infra.config.ConfigError``, ``InputError``, shard and checkpoint
format errors, ...) or ``OSError`` (missing files, a file where a folder belongs) with a message that names the
file or the config key; :func:`run_cli` prints that message and exits with status 2. Anything else is a bug and
keeps its traceback. ``VEXPRESS_TRACEBACK=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

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
