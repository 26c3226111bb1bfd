"""The training loop (docs/design.md, "Training"): Adam, cross-entropy, one trace per optimizer step.

    result = fit(model, train_x, train_y, val_x, val_y, lr=1e-4, num_epochs=500, seed=0)

Traces are reshuffled every epoch with the seed; gradients are clipped to norm 1.0.
Validation loss is computed every `val_every` epochs and after the last. With `state_file`,
the full training state is saved atomically every `checkpoint_every` epochs, and `resume`
continues from it to the same result an uninterrupted run gives.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.adam import adam as adam_update     # the update torch.optim.Adam.step applies
from tqdm import tqdm

from model import config
from model.outputs import write_torch
from model.tracking import Tracker


@dataclass
class FitResult:
    train_losses: list[float]
    val_losses: dict[int, float] = field(default_factory=dict)   # epoch (1-based) -> loss
    train_seconds: float = 0.0
    resumed_from_epoch: int = 0


@torch.no_grad()
def validation_loss(model: torch.nn.Module, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    """Mean over traces of each trace's mean cross-entropy, in eval mode."""
    was_training = model.training
    model.eval()
    losses = [F.cross_entropy(model(x)[0], y).item() for x, y in zip(xs, ys)]
    model.train(was_training)
    return float(np.mean(losses))


def _save_state(path: Path, model, optimizer, shuffle_rng, epoch: int, result: FitResult,
                fingerprint: dict) -> None:
    state = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle_rng.bit_generator.state,
             "train_losses": result.train_losses, "val_losses": result.val_losses,
             "train_seconds": result.train_seconds, "fingerprint": fingerprint}
    write_torch(path, state)


DISCARDED_SUFFIX = ".discarded"


def _set_aside(path: Path, why: str) -> None:
    """Keep a state that cannot be resumed under another name, saying why, so that the new run
    does not overwrite it before it has finished (fit's caller removes it then)."""
    aside = path.with_name(path.name + DISCARDED_SUFFIX)
    path.replace(aside)
    print(f"notice: not resuming from {path}: {why}; starting over (the old state is kept as "
          f"{aside} until this run finishes)", file=sys.stderr, flush=True)


def _load_state(path: Path, model, optimizer, shuffle_rng, fingerprint: dict) -> tuple[int, FitResult] | None:
    """Restore a saved training state; None if there is none, or (with a notice, the file set
    aside) when it is damaged or was made with other settings."""
    if not path.exists():
        return None
    try:
        # the output folder may hold files we did not write: never unpickle code from it
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "fingerprint"} <= state.keys():
            raise ValueError("not a training state of this pipeline")
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        _set_aside(path, f"the file is damaged or not a training state ({reason})")
        return None
    if state.get("fingerprint") != fingerprint:
        saved = state.get("fingerprint") or {}
        changed = [k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k) != fingerprint.get(k)]
        _set_aside(path, "it was made with other settings (" + ", ".join(
            f"{k} {saved.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed) + ")")
        return None
    try:        # before the model, so that a refused state leaves the model as it was
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:
        _set_aside(path, f"its optimizer state does not fit ({err})")
        return None
    model.load_state_dict(state["model"])
    torch.set_rng_state(state["torch_rng"])
    shuffle_rng.bit_generator.state = state["shuffle_rng"]
    result = FitResult(list(state["train_losses"]), dict(state["val_losses"]),
                       float(state["train_seconds"]), resumed_from_epoch=int(state["epoch"]))
    return int(state["epoch"]), result


class Adam:
    """torch.optim.Adam(fused=True) without the torch.optim.Optimizer base class.

    The update is torch's own: step() calls torch.optim.adam.adam, the function Adam.step calls,
    with the same arguments, so parameters match torch.optim.Adam's bit for bit
    (tests/test_train.py). The base class is left out because its first call imports
    torch._dynamo, for compilation this project never uses: more than a second of every job's
    time. state_dict() has torch.optim.Adam's layout, so saved training states load either way.
    """

    def __init__(self, params, lr: float = config.LR, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = float(lr), tuple(betas), float(eps)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.tensor(0.0) for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = lambda values: [values[i] for i in live]      # noqa: E731
        adam_update(
            pick(self.params), [self.params[i].grad for i in live], pick(self.exp_avg),
            pick(self.exp_avg_sq), [], pick(self.steps), fused=True, amsgrad=False,
            beta1=self.betas[0], beta2=self.betas[1], lr=self.lr, weight_decay=0.0, eps=self.eps,
            maximize=False, capturable=False, differentiable=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict:
        state = {i: {"step": s.clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
                 for i, (s, m, v) in enumerate(zip(self.steps, self.exp_avg, self.exp_avg_sq)) if s.item() > 0}
        group = {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": 0.0, "amsgrad": False,
                 "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                 "fused": True, "decoupled_weight_decay": False, "params": list(range(len(self.params)))}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: dict) -> None:
        """Raises ValueError when `saved` is not an Adam state of these parameters."""
        try:
            (group,) = saved["param_groups"]
            if len(group["params"]) != len(self.params):
                raise ValueError(f"{len(group['params'])} parameters saved, {len(self.params)} here")
            for i, entry in saved["state"].items():
                p = self.params[group["params"].index(i)]
                if entry["exp_avg"].shape != p.shape or entry["exp_avg_sq"].shape != p.shape:
                    raise ValueError("parameter shapes differ")
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not an Adam state ({type(err).__name__}: {err})") from None
        self.lr = float(group["lr"])
        for i, entry in saved["state"].items():
            k = group["params"].index(i)
            self.steps[k] = torch.as_tensor(entry["step"], dtype=torch.float32).clone()
            self.exp_avg[k] = entry["exp_avg"].clone()
            self.exp_avg_sq[k] = entry["exp_avg_sq"].clone()


def make_optimizer(model: torch.nn.Module, lr: float = config.LR) -> Adam:
    # fused: one kernel per step for all parameters, the same update as the default loop to
    # float32 rounding (tests/test_fused_gru.py); at batch size 1 per-step overhead matters
    return Adam(model.parameters(), lr=lr)


def train_step(model: torch.nn.Module, optimizer: Adam, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step on one trace; returns its mean cross-entropy."""
    loss = F.cross_entropy(model(x)[0], y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.GRAD_CLIP)
    optimizer.step()
    return loss.item()


def fit(model: torch.nn.Module, train_x: list[torch.Tensor], train_y: list[torch.Tensor],
        val_x: list[torch.Tensor], val_y: list[torch.Tensor], *, lr: float = config.LR,
        num_epochs: int = config.NUM_EPOCHS, seed: int = config.SEED,
        val_every: int = config.VAL_EVERY, use_wandb: bool = True, tracker: Tracker | None = None,
        run_name: str = "powertrace-train", state_file: Path | None = None,
        checkpoint_every: int = config.CHECKPOINT_EVERY, resume: bool = False,
        fingerprint: dict | None = None, progress: bool = True) -> FitResult:
    """Train `model` in place. Inputs are (1, T, 6) feature tensors and (T,) label tensors.

    Logs per-epoch `train_loss` (and `val_loss`) to W&B: to `tracker` when given, else to a run
    this function starts itself when `use_wandb` is true.
    """
    own_tracker = tracker is None
    if own_tracker:
        tracker = Tracker(run_name, {"lr": lr, "num_epochs": num_epochs, "seed": seed}, enabled=use_wandb)
    optimizer = make_optimizer(model, lr)
    shuffle_rng = np.random.default_rng(seed)
    fingerprint = fingerprint or {}
    start_epoch, result = 0, FitResult([])
    if resume and state_file is not None:
        restored = _load_state(Path(state_file), model, optimizer, shuffle_rng, fingerprint)
        if restored is not None:
            start_epoch, result = restored
            print(f"resumed from epoch {start_epoch} of {num_epochs} ({state_file})", flush=True)

    model.train()
    bar = tqdm(range(start_epoch, num_epochs), initial=start_epoch, total=num_epochs, desc="epochs",
               unit="epoch", disable=not progress, mininterval=1.0, dynamic_ncols=True)
    for epoch in bar:
        started = time.perf_counter()
        losses = []
        for i in shuffle_rng.permutation(len(train_x)):
            losses.append(train_step(model, optimizer, train_x[i], train_y[i]))
        result.train_seconds += time.perf_counter() - started
        result.train_losses.append(float(np.mean(losses)))
        logged = {"epoch": epoch + 1, "train_loss": result.train_losses[-1]}
        if (epoch + 1) % val_every == 0 or epoch + 1 == num_epochs:
            result.val_losses[epoch + 1] = validation_loss(model, val_x, val_y)
            logged["val_loss"] = result.val_losses[epoch + 1]
        tracker.log(logged, step=epoch + 1)
        bar.set_postfix(loss=f"{result.train_losses[-1]:.4f}",
                        val=f"{result.val_losses[max(result.val_losses)]:.4f}" if result.val_losses else "-",
                        refresh=False)
        if state_file is not None and ((epoch + 1) % checkpoint_every == 0) and epoch + 1 < num_epochs:
            _save_state(Path(state_file), model, optimizer, shuffle_rng, epoch + 1, result, fingerprint)
    bar.close()
    if own_tracker:
        tracker.finish()
    return result
