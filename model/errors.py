"""Bad input: one line naming the file and the problem, exit status 2, no traceback."""
from __future__ import annotations

import sys
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class InputError(Exception):
    """The user's input (a file, a flag, a directory) is wrong; not a bug in the pipeline."""


def run_cli(main: Callable[[], int], prog: str) -> None:
    """Run a command-line main(); bad input becomes one stderr line and exit status 2.

    Any other exception is a bug: Python prints its traceback and exits 1.
    """
    try:
        status = main()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        status = EXIT_BAD_INPUT
    sys.exit(status)
