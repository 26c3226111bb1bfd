"""Stopping on SIGINT or SIGTERM, the same way wherever the pipeline waits on work: the grid
launcher, the Slurm waits, a site's workers, a training job.

    with interruptible(on_repeat=hurry):
        ...                          # SIGINT or SIGTERM raises Interrupted here
    status = exit_status(stop)       # 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM

Interrupted is a KeyboardInterrupt, so a stop unwinds like Ctrl-C: finally blocks and context
managers run (temporary files go, W&B closes). A second signal while the first one's clean-up
runs (a second Ctrl-C; coreutils `timeout` signals twice) must not cut that clean-up short: it
calls `on_repeat` (to hurry it along) or is ignored. After a stop the signals stay ignored, as
the caller then only reports and exits; otherwise the handlers from before come back.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(stop: BaseException) -> int:
    """The signal behind a stop: its own, or SIGINT for a plain KeyboardInterrupt."""
    return stop.signum if isinstance(stop, Interrupted) else int(signal.SIGINT)


def exit_status(stop: BaseException) -> int:
    """128 + the signal, as for any process a signal ended."""
    return 128 + signum_of(stop)


@contextmanager
def interruptible(on_repeat: Callable[[int], None] | None = None):
    """SIGINT and SIGTERM raise Interrupted inside the block; see the module docstring."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    stopped = False

    def handler(signum, frame):
        nonlocal stopped
        if stopped:
            if on_repeat is not None:
                on_repeat(signum)
            return
        stopped = True
        raise Interrupted(signum)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    except KeyboardInterrupt:     # a stop raised by an inner block's handler passes through here
        stopped = True
        raise
    finally:
        for s, old in previous.items():
            signal.signal(s, signal.SIG_IGN if stopped else old)
