"""The bidirectional GRU power-state classifier (docs/design.md, "Training").

Its recurrent weights live in an ordinary nn.GRU under `gru.`, so a checkpoint's
`gru.*` entries load into a plain nn.GRU whichever kernel (`torch` or `fused`) trained it.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

from model import config
from model.classifiers.fused_gru import FusedGRUUnavailable, fused_gru_forward, load_extension
from model.errors import InputError


class PowerStateGRU(nn.Module):
    def __init__(self, num_states: int, hidden_size: int = config.HIDDEN_SIZE,
                 num_layers: int = config.NUM_LAYERS, dropout: float = config.DROPOUT,
                 gru_impl: str = "torch"):
        super().__init__()
        # what a checkpoint stores to rebuild this module without any training code
        self.model_args = {"num_states": num_states, "hidden_size": hidden_size,
                           "num_layers": num_layers, "dropout": dropout}
        self.gru = nn.GRU(config.NUM_FEATURES, hidden_size, num_layers=num_layers,
                          bidirectional=True, batch_first=True, dropout=dropout)
        self.head = nn.Linear(2 * hidden_size, num_states)
        self.gru_impl = gru_impl
        # logits are divided by it (model/classifiers/calibration.py): 1.0 while training; a
        # fitted temperature is set after, and a checkpoint records it apart from the weights
        self.temperature = 1.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, 6) normalised features -> (B, T, K) state logits (over the temperature)."""
        if self.gru_impl == "fused":
            hidden = fused_gru_forward(self.gru, features)
        else:
            hidden, _ = self.gru(features)
        logits = self.head(hidden)
        return logits if self.temperature == 1.0 else logits / self.temperature


@torch.no_grad()
def state_log_probabilities(model: PowerStateGRU, features: np.ndarray) -> np.ndarray:
    """(T, 6) normalised features of one trace -> (T, K) log state probabilities (float64), in
    eval mode; log-softmax in float64, so exp() of a row sums to 1 to rounding."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.from_numpy(np.ascontiguousarray(features)).unsqueeze(0).to(device))[0]
    model.train(was_training)
    return torch.log_softmax(logits.double().cpu(), dim=1).numpy()


def intended_gru_impl(requested: str, device_type: str) -> str:
    """The implementation `requested` means on a device type: `auto` is the fused kernel on
    CPU and cuDNN's nn.GRU elsewhere. The one place this rule lives."""
    if requested != "auto":
        return requested
    return "fused" if device_type == "cpu" else "torch"


def resolve_gru_impl(requested: str, device: torch.device) -> str:
    """The implementation a job will use: intended_gru_impl, then whether the kernel builds.

    When the kernel cannot be built, `auto` falls back to `torch` with a one-line notice and
    `fused` is bad usage (InputError, exit 2) naming the reason.
    """
    if requested not in config.GRU_IMPLS:
        raise InputError(f"--gru_impl {requested!r}: choose from {', '.join(config.GRU_IMPLS)}")
    if intended_gru_impl(requested, device.type) == "torch":
        return "torch"
    if device.type != "cpu":
        raise InputError(f"--gru_impl fused runs on the CPU only, not on {device}")
    try:
        load_extension()
    except FusedGRUUnavailable as err:
        if requested == "fused":
            raise InputError(f"--gru_impl fused: {err}") from None
        print(f"notice: {err}; using torch's nn.GRU instead (slower)", file=sys.stderr)
        return "torch"
    return "fused"
