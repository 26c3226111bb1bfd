"""Bad input: one line naming the file and the problem, exit status 2, no traceback."""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_DIVERGED = 4     # training ran but its loss stopped being finite; the launcher tells it apart


def strict_json(text: str):
    """json.loads that refuses an object with a key twice (json keeps the last one silently),
    as a JSONDecodeError whose msg names the key."""
    def no_duplicates(pairs):
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise json.JSONDecodeError(f"key {key!r} appears twice in one object", text, 0)
        return dict(pairs)
    return json.loads(text, object_pairs_hook=no_duplicates)


class InputError(Exception):
    """The user's input (a file, a flag, a directory) is wrong; not a bug in the pipeline."""


def memory_bytes() -> int:
    """This machine's physical memory (0 when it cannot be asked)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def refuse_oversized(n_bytes: float, what: str, flags: str) -> None:
    """InputError, before anything is allocated, when `what` would need more memory than the
    machine has (estimated by the caller): a silent grind on swap, or a MemoryError traceback
    after minutes, otherwise. `flags` are those that size it."""
    limit = memory_bytes() or 2**40
    if not n_bytes <= limit:                 # NaN too
        raise InputError(f"{flags}: {what} would need about {n_bytes / 2**30:.3g} GiB of memory, more than "
                         f"this machine's {limit / 2**30:.3g} GiB; choose a smaller size")


def refuse_special_file(path, what: str = "file") -> None:
    """InputError when `path` exists but is a named pipe (FIFO), a device or a socket: reading
    one blocks until someone writes, or never ends. Inputs are regular files (or links to
    them); a missing path or a directory is left to the caller to say."""
    try:
        mode = os.stat(path).st_mode          # stat never opens it, so it cannot block
    except OSError:
        return
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    raise InputError(f"{path}: is {kind}, not a regular file; give the {what} itself")


def read_structured(path, what: str, parse):
    """`parse(text)` of the regular file `path` (JSON, TOML, ...): InputError naming the file
    when it is a special file, cannot be read, is not text, or does not parse (its parser's
    first line, cut to 120 characters)."""
    refuse_special_file(path, what)
    try:
        return parse(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:    # JSON and TOML errors are ValueErrors
        raise InputError(f"{path}: not a readable {what} ({str(err).splitlines()[0][:120]})") from None


class TrainingDiverged(Exception):
    """The training loss stopped being finite: the settings (usually --lr) do not train."""


def run_cli(main: Callable[[], int], prog: str) -> None:
    """Run a command-line main(); bad input becomes one stderr line and exit status 2, a
    diverged training one line and exit status 4.

    Any other exception is a bug: Python prints its traceback and exits 1.
    """
    try:
        status = main()
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        status = EXIT_BAD_INPUT
    except TrainingDiverged as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        status = EXIT_DIVERGED
    sys.exit(status)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each flag's default after its help unless the help
    already says it (or there is none to show: an off switch, a flag without a default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or isinstance(action.default, bool)
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line usage error instead of the whole usage text."""

    def __init__(self, doc: str, **kwargs):
        head, _, rest = doc.partition("\n\n")
        super().__init__(description=head, epilog=rest or None, formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
