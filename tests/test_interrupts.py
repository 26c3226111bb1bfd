"""One way to stop on SIGINT or SIGTERM: raise once, let the clean-up finish, exit 128 + signal."""
from __future__ import annotations

import os
import signal

import pytest

from model.interrupts import Interrupted, exit_status, interruptible


def test_a_signal_raises_interrupted_and_a_repeat_during_clean_up_only_calls_on_repeat():
    repeats, cleaned = [], []
    with pytest.raises(Interrupted) as stop:
        with interruptible(on_repeat=repeats.append):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                os.kill(os.getpid(), signal.SIGINT)     # a second signal: no second exception
                cleaned.append(True)
    assert stop.value.signum == signal.SIGTERM and exit_status(stop.value) == 143
    assert repeats == [signal.SIGINT] and cleaned == [True]
    # stopped: the caller only reports and exits, so a late signal is ignored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def test_without_a_signal_the_handlers_from_before_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with interruptible():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_interrupt_is_a_keyboard_interrupt_so_it_unwinds_like_ctrl_c():
    assert issubclass(Interrupted, KeyboardInterrupt)
    assert exit_status(KeyboardInterrupt()) == 130
