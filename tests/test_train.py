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


def _steps(model, optimizer, xs, ys, n):
    from model.classifiers.train import train_step
    for _ in range(n):
        train_step(model, optimizer, xs[0], ys[0])
    return [p.detach().clone() for p in model.parameters()]


def test_adam_updates_parameters_exactly_as_torch_optim_adam():
    model, xs, ys = tiny_problem()
    reference, _, _ = tiny_problem()
    ours = _steps(model, make_optimizer(model, lr=3e-3), xs, ys, 5)
    theirs = _steps(reference, torch.optim.Adam(reference.parameters(), lr=3e-3, fused=True), xs, ys, 5)
    assert ours[0].ne(tiny_problem()[0].state_dict()[next(iter(model.state_dict()))]).any()  # it trained
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_adam_state_loads_into_torch_optim_adam_and_back():
    model, xs, ys = tiny_problem()
    ours = make_optimizer(model, lr=3e-3)
    _steps(model, ours, xs, ys, 3)
    twin, _, _ = tiny_problem()
    twin.load_state_dict(model.state_dict())
    theirs = torch.optim.Adam(twin.parameters(), lr=3e-3, fused=True)
    theirs.load_state_dict(ours.state_dict())
    a, b = _steps(model, ours, xs, ys, 2), _steps(twin, theirs, xs, ys, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    back = make_optimizer(model, lr=1.0)
    back.load_state_dict(theirs.state_dict())
    assert back.lr == 3e-3 and all(torch.equal(s, t) for s, t in zip(back.steps, ours.steps))


def test_adam_refuses_a_state_of_other_parameters():
    model, _, _ = tiny_problem()
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="parameters saved"):
        make_optimizer(model).load_state_dict(torch.optim.Adam(other.parameters()).state_dict())


def test_training_imports_no_compiler(tmp_path, demo_file):
    """torch.optim's Optimizer base imports torch._dynamo (over a second) on its first call; a
    job never compiles, so it must not pay for that import."""
    script = ("import sys\nfrom model.job import run_job\nfrom model.settings import JobSettings\n"
              f"run_job(JobSettings(data_file={str(demo_file)!r}, model='llama-3-8b', hardware='a100', tp=1, "
              f"num_epochs=1, output_dir={str(tmp_path)!r}, use_wandb=False, progress=False))\n"
              "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n")
    from tests.conftest import run_cli
    ran = run_cli("-c", script)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().endswith("no dynamo")
