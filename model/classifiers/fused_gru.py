"""A fused CPU kernel for a multi-layer bidirectional nn.GRU.

Input projections and all weight gradients are whole-sequence matrix products done by torch;
only the W_hh recurrence is stepped, in compiled C++ (csrc/gru_recurrence.cpp), built once
through torch.utils.cpp_extension and cached in TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions). The parameters are those of an nn.GRU, so either implementation
trains and loads the same checkpoint.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SOURCE = Path(__file__).resolve().parent / "csrc" / "gru_recurrence.cpp"
# -ffast-math lets gcc call glibc's vectorised exp/tanh; the tests hold it to 1e-9 of nn.GRU in float64
CFLAGS = ["-O3", "-march=native", "-ffast-math"]
_extension = None
_build_error: str | None = None


class FusedGRUUnavailable(RuntimeError):
    """The C++ kernel cannot be built here (no compiler, no ninja, ...)."""


def _build_tag() -> str:
    """One build per CPU (-march=native: never reuse it on another one), flags, and kernel source
    file and text: a changed or second checkout builds beside the other instead of rebuilding
    over a library that running jobs have loaded."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f if l.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor(), platform.machine()]
    key = ("".join(lines) + " ".join(CFLAGS) + str(SOURCE)).encode() + SOURCE.read_bytes()
    return hashlib.sha256(key).hexdigest()[:10]


def _build_directory() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__.replace('+', '_')}"
    return Path(root) / tag / f"powertrace_gru_{_build_tag()}"


def load_extension(verbose: bool = True):
    """Build (first use) or load (cached) the C++ recurrence; raise FusedGRUUnavailable if it cannot."""
    global _extension, _build_error
    if _extension is not None:
        return _extension
    if _build_error is not None:
        raise FusedGRUUnavailable(_build_error)
    from torch.utils import cpp_extension
    build_dir = _build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    cached = any(build_dir.glob("powertrace_gru*.so"))
    started = time.perf_counter()
    try:
        # torch marks a build in progress with a plain `lock` file, which a killed build leaves
        # behind, and every later load then waits for it forever. Builds here take an OS lock
        # first (released when its holder dies), so whoever holds it knows any `lock` is stale.
        with open(build_dir / "build.flock", "w") as flock:
            fcntl.flock(flock, fcntl.LOCK_EX)
            (build_dir / "lock").unlink(missing_ok=True)
            _extension = cpp_extension.load(name="powertrace_gru", sources=[str(SOURCE)],
                                            extra_cflags=CFLAGS, build_directory=str(build_dir),
                                            verbose=False)
    except Exception as err:  # compiler, ninja or linker missing or failing
        reason = str(err).strip().splitlines()
        _build_error = f"cannot build the fused GRU kernel: {reason[-1] if reason else type(err).__name__}"
        raise FusedGRUUnavailable(_build_error) from None
    if verbose and not cached:
        print(f"built the fused GRU kernel in {time.perf_counter() - started:.0f} s "
              f"(cached in {build_dir})", flush=True)
    return _extension


class GRURecurrence(torch.autograd.Function):
    """hs = recurrence(gi; W_hh, b_hh) with h_0 = 0, for one layer direction; `reverse` steps
    from the last time bin to the first. All tensors are in natural time order."""

    @staticmethod
    def forward(ctx, gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, reverse: bool = False):
        hs, gates, ghn = load_extension().forward(gi.contiguous(), w_hh.detach(), b_hh.detach(), reverse)
        ctx.save_for_backward(w_hh, hs, gates, ghn)
        ctx.reverse = reverse
        return hs

    @staticmethod
    def backward(ctx, grad_hs: torch.Tensor):
        w_hh, hs, gates, ghn = ctx.saved_tensors
        dgi, dgh = load_extension().backward(grad_hs, w_hh.detach(), hs, gates, ghn, ctx.reverse)
        # the state each step started from, zero at the first step (last bin when reverse)
        h_prev = F.pad(hs[:, 1:], (0, 0, 0, 1)) if ctx.reverse else F.pad(hs[:, :-1], (0, 0, 1, 0))
        hidden = hs.shape[-1]
        grad_w_hh = dgh.reshape(-1, 3 * hidden).t() @ h_prev.reshape(-1, hidden)
        grad_b_hh = dgh.sum(dim=(0, 1))
        return dgi, grad_w_hh, grad_b_hh, None


def _direction(x: torch.Tensor, gru: nn.GRU, layer: int, reverse: bool) -> torch.Tensor:
    suffix = f"_l{layer}_reverse" if reverse else f"_l{layer}"
    gi = F.linear(x, getattr(gru, "weight_ih" + suffix), getattr(gru, "bias_ih" + suffix))
    return GRURecurrence.apply(gi, getattr(gru, "weight_hh" + suffix), getattr(gru, "bias_hh" + suffix), reverse)


def fused_gru_forward(gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """Output of `gru(x)[0]` for a batch_first, zero-initial-state nn.GRU, with the fused kernel.

    Dropout between layers draws its mask exactly as nn.GRU's CPU path does, so with the
    same RNG state both implementations train identically.
    """
    if not gru.batch_first or not gru.bias:
        raise ValueError("fused_gru_forward supports batch_first GRUs with biases")
    out = x
    for layer in range(gru.num_layers):
        if layer > 0 and gru.dropout > 0 and gru.training:
            out = F.dropout(out, gru.dropout, training=True)
        directions = [_direction(out, gru, layer, False)]
        if gru.bidirectional:
            directions.append(_direction(out, gru, layer, True))
        out = torch.cat(directions, dim=-1) if len(directions) > 1 else directions[0]
    return out
