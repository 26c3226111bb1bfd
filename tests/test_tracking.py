"""Experiment tracking: credentials without a reachable server go offline fast, said in one line."""
from __future__ import annotations

import time

import pytest


@pytest.mark.slow
def test_unreachable_wandb_server_goes_offline_fast(tmp_path, monkeypatch, capsys):
    import socket
    from model.tracking import Tracker
    with socket.socket() as probe:           # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    started = time.monotonic()
    tracker = Tracker("job", {"lr": 1.0}, run_dir=str(tmp_path))
    tracker.log({"train_loss": 1.0}, step=1)
    tracker.finish()
    assert time.monotonic() - started < 60
    assert tracker.mode == "offline"
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("wandb:")]
    assert len(lines) == 1 and "cannot be reached" in lines[0]
