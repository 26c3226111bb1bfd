"""Training: a saved training state is data, never code, and one that cannot be resumed is named and kept."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from model import config
from model.classifiers.gru import PowerStateGRU
from model.classifiers.train import DISCARDED_SUFFIX, _save_state, fit, make_optimizer


def tiny_problem(seed=0):
    rng = np.random.default_rng(seed)
    xs = [torch.from_numpy(rng.normal(size=(1, 30, config.NUM_FEATURES)).astype(np.float32))]
    ys = [torch.from_numpy(rng.integers(0, 3, 30)).long()]
    torch.manual_seed(seed)
    return PowerStateGRU(3, hidden_size=4, num_layers=1, dropout=0.0, gru_impl="torch"), xs, ys


def tiny_fit(state_file, fingerprint, num_epochs=4, resume=True):
    model, xs, ys = tiny_problem()
    return fit(model, xs, ys, xs, ys, num_epochs=num_epochs, use_wandb=False, state_file=state_file,
               checkpoint_every=2, resume=resume, fingerprint=fingerprint, progress=False)


class Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_state_file_does_not_run_code_on_resume(tmp_path, capsys):
    marker = tmp_path / "pwned"
    state = tmp_path / "job.state.pt"
    state.write_bytes(pickle.dumps({"epoch": 2, "model": Payload(marker), "optimizer": {},
                                    "fingerprint": {"a": 1}}, protocol=2))
    result = tiny_fit(state, {"a": 1})
    assert not marker.exists()
    assert result.resumed_from_epoch == 0 and len(result.train_losses) == 4
    assert "not resuming" in capsys.readouterr().err


def test_state_saved_by_training_resumes_with_safe_loading(tmp_path):
    state = tmp_path / "job.state.pt"
    model, xs, ys = tiny_problem()
    first = fit(model, xs, ys, xs, ys, num_epochs=2, use_wandb=False, progress=False)
    _save_state(state, model, make_optimizer(model), np.random.default_rng(0), 2, first, {"a": 1})
    assert tiny_fit(state, {"a": 1}).resumed_from_epoch == 2


@pytest.mark.parametrize("kind", ["damaged", "other settings"])
def test_unusable_state_is_reported_and_kept(tmp_path, capsys, kind):
    state = tmp_path / "job.state.pt"
    if kind == "damaged":
        state.write_bytes(b"not a state")
    else:
        model, xs, ys = tiny_problem()
        first = fit(model, xs, ys, xs, ys, num_epochs=2, use_wandb=False, progress=False)
        _save_state(state, model, make_optimizer(model), np.random.default_rng(0), 2, first, {"lr": 0.1})
    old = state.read_bytes()
    result = tiny_fit(state, {"lr": 0.2})
    err = capsys.readouterr().err
    assert result.resumed_from_epoch == 0
    assert ("damaged" in err) if kind == "damaged" else ("other settings" in err and "lr 0.1 -> 0.2" in err)
    assert (tmp_path / ("job.state.pt" + DISCARDED_SUFFIX)).read_bytes() == old
