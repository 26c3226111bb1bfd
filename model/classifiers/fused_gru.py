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
import logging
import os
import platform
import stat
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SOURCES = [Path(__file__).resolve().parent / "csrc" / name for name in ("gru_recurrence.cpp", "dropout_mask.cpp")]
# -ffast-math lets gcc call glibc's vectorised exp/tanh; the tests hold it to 1e-9 of nn.GRU in float64
CFLAGS = ["-O3", "-march=native", "-ffast-math"]
_extension = None
_build_error: str | None = None
_masks_checked: bool | None = None


class FusedGRUUnavailable(RuntimeError):
    """The C++ kernel cannot be built here (no compiler, no ninja, ...)."""


def _build_tag() -> str:
    """One build per CPU (-march=native: never reuse it on another one), flags, kernel source
    files and text, and torch (location and version): a changed or second checkout, or another
    torch, builds beside the other instead of rebuilding over a library that running jobs have
    loaded."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f if l.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor(), platform.machine()]
    # torch's location and version too: the same environment reached through a second path
    # compiles against other include paths, which torch would otherwise rebuild in place
    torch_key = f" torch {torch.__version__} at {os.path.dirname(torch.__file__)} "
    key = ("".join(lines) + " ".join(CFLAGS) + " ".join(map(str, SOURCES)) + torch_key).encode()
    key += b"".join(source.read_bytes() for source in SOURCES)
    return hashlib.sha256(key).hexdigest()[:10]


def _build_directory(root: Path | str | None = None) -> Path:
    root = root or os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__.replace('+', '_')}"
    return Path(root) / tag / f"powertrace_gru_{_build_tag()}"


def _private_folder(folder: Path) -> Path:
    """`folder` created (mode 0700) or found as this user's own, private, real directory: in a
    shared temporary folder anyone could have made it first and planted a library in it.
    OSError naming the problem otherwise."""
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        raise OSError(f"not a directory{' (a symbolic link)' if stat.S_ISLNK(info.st_mode) else ''}")
    if info.st_uid != os.getuid():
        raise OSError(f"owned by user id {info.st_uid}, not by this user ({os.getuid()})")
    if info.st_mode & 0o077:
        raise OSError(f"open to other users (mode {stat.S_IMODE(info.st_mode):o}, want 700)")
    return folder


def _writable_build_directory() -> Path:
    """The usual cache folder, or, where it cannot be created (a read-only or missing HOME), one
    in a private folder of this user in the temporary folder, with one notice;
    FusedGRUUnavailable when neither can be (then nn.GRU runs)."""
    import tempfile
    usual = _build_directory()
    try:
        usual.mkdir(parents=True, exist_ok=True)
        return usual
    except OSError as err:
        problem = f"{usual}: {err.strerror or err}"
    private = Path(tempfile.gettempdir()) / f"torch_extensions-{os.getuid()}"
    fallback = _build_directory(private)
    try:
        _private_folder(private)
        fallback.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FusedGRUUnavailable(f"cannot create a cache folder for the fused GRU kernel ({problem}; "
                                  f"{private}: {err.strerror or err}); set TORCH_EXTENSIONS_DIR") from None
    print(f"notice: cannot use the kernel cache ({problem}); building in {fallback} instead "
          "(set TORCH_EXTENSIONS_DIR to choose)", file=sys.stderr, flush=True)
    return fallback


def extension_is_built() -> bool:
    """Whether a build for this CPU, torch and kernel source is already cached."""
    try:
        return _extension is not None or any(_build_directory().glob("powertrace_gru*.so"))
    except OSError:
        return False


def _import_cpp_extension():
    """torch.utils.cpp_extension without the warning a CUDA build of torch logs when it is
    imported on a machine without CUDA ("No CUDA runtime is found"): this kernel is CPU code."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    if not torch.cuda.is_available():
        logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def load_extension(verbose: bool = True):
    """Build (first use) or load (cached) the C++ recurrence; raise FusedGRUUnavailable if it cannot."""
    global _extension, _build_error
    if _extension is not None:
        return _extension
    if _build_error is not None:
        raise FusedGRUUnavailable(_build_error)
    cpp_extension = _import_cpp_extension()
    try:
        build_dir = _writable_build_directory()
    except FusedGRUUnavailable as err:
        _build_error = str(err)
        raise
    cached = any(build_dir.glob("powertrace_gru*.so"))
    started = time.perf_counter()
    try:
        # torch marks a build in progress with a plain `lock` file, which a killed build leaves
        # behind, and every later load then waits for it forever. Builds here take an OS lock
        # first (released when its holder dies), so whoever holds it knows any `lock` is stale.
        # never through a symbolic link (it could point at any file); never truncated either
        lock_fd = os.open(build_dir / "build.flock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(lock_fd, "w") as flock:
            fcntl.flock(flock, fcntl.LOCK_EX)
            (build_dir / "lock").unlink(missing_ok=True)
            _extension = cpp_extension.load(name="powertrace_gru", sources=[str(source) for source in SOURCES],
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


class GRULayer(torch.autograd.Function):
    """One batch_first nn.GRU layer with h_0 = 0, every direction at once:
    out = layer(x; per direction w_ih, w_hh, b_ih, b_hh in nn.GRU's order).

    The kernel writes each direction's half of the output in place, so there is no cat; the
    input projections and the gradients are per-direction matrix products over all time bins.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        w_ih, w_hh, b_ih, b_hh = ([p.detach() for p in params[i::4]] for i in range(4))
        batch, steps, inputs = x.shape
        x_rows = x.detach().reshape(batch * steps, inputs)
        gi = x.new_empty(len(w_ih), batch * steps, w_ih[0].shape[0])
        for d, w in enumerate(w_ih):
            torch.mm(x_rows, w.t(), out=gi[d])
        out, gates, ghn = load_extension().forward(gi.view(len(w_ih), batch, steps, -1), w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, out, gates, ghn, *w_ih, *w_hh)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, out, gates, ghn, *weights = ctx.saved_tensors
        directions = len(weights) // 2
        w_ih, w_hh = [w.detach() for w in weights[:directions]], [w.detach() for w in weights[directions:]]
        hidden = w_hh[0].shape[1]
        dgi, dgh, grad_b_ih, grad_b_hh = load_extension().backward(grad_out, w_hh, out, gates, ghn)
        batch, steps, inputs = x.shape
        x_rows = x.detach().reshape(batch * steps, inputs)
        grad_x = None
        grads = []
        for d in range(directions):
            dgi_rows = dgi[d].view(batch * steps, -1)
            if ctx.needs_input_grad[0]:
                grad_x = dgi_rows @ w_ih[d] if grad_x is None else grad_x.addmm_(dgi_rows, w_ih[d])
            # dW_hh = sum over steps of dgh_t h_prev^T, where h_prev is the state the step started
            # from: the previous bin forward, the next bin in reverse, and zero at a first step
            later, earlier = slice(1, None), slice(None, -1)
            step_rows, prev_rows = (later, earlier) if d == 0 else (earlier, later)
            h_prev, dgh_steps = out[:, prev_rows, hidden * d:hidden * (d + 1)], dgh[d, :, step_rows]
            # einsum runs this as (h_prev^T dgh)^T, the orientation MKL handles best here
            grad_w_hh = torch.einsum("bsh,bsg->gh", h_prev, dgh_steps)
            grads += [dgi_rows.t() @ x_rows, grad_w_hh, grad_b_ih[d], grad_b_hh[d]]
        return (grad_x.view_as(x) if grad_x is not None else None, *grads)


def _layer_parameters(gru: nn.GRU, layer: int) -> list[nn.Parameter]:
    suffixes = [f"_l{layer}"] + ([f"_l{layer}_reverse"] if gru.bidirectional else [])
    return [getattr(gru, name + suffix) for suffix in suffixes
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def _dropout_masks_match_bernoulli() -> bool:
    """Whether the kernel's dropout masks are bernoulli_'s, draw for draw, with this torch: checked
    once on a scratch copy of the random state, so the real stream is not touched."""
    global _masks_checked
    if _masks_checked is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(12345)
            torch.rand(7)                 # start at an odd word, as a real run may
            expected_mask = torch.empty(2001).bernoulli_(0.8)
            expected_next = torch.rand(3)     # the generator must also end where bernoulli_ leaves it
            torch.manual_seed(12345)
            torch.rand(7)
            mask = torch.empty(2001)
            load_extension().bernoulli_mask_(mask, 0.8)
            _masks_checked = torch.equal(mask, expected_mask) and torch.equal(torch.rand(3), expected_next)
    return _masks_checked


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """F.dropout(x, p, training=True) as torch computes it on the CPU (noise.bernoulli_(1 - p),
    noise.div_(1 - p), x * noise), with the kernel drawing the same mask several times faster."""
    if not x.is_contiguous() or not _dropout_masks_match_bernoulli():
        return F.dropout(x, p, training=True)
    noise = torch.empty_like(x)
    load_extension().bernoulli_mask_(noise, 1 - p)
    return x * noise.div_(1 - p)


def fused_gru_forward(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Output of `gru(x)[0]` for a batch_first, zero-initial-state nn.GRU, with the fused kernel.

    Dropout between layers draws its mask exactly as nn.GRU's CPU path does, so with the
    same RNG state both implementations train identically. Under torch.no_grad in eval mode
    (validation, generation) the kernel runs every layer itself, the batch's sequences side by
    side, and keeps nothing for backward; there `lengths` (B,) may give sequences of unequal
    length, padded at the end: sequence b is x[b, :lengths[b]], as if run alone, and its output
    rows past that are zero (nn.GRU's output for a packed sequence, padded back).
    """
    if not gru.batch_first or not gru.bias:
        raise ValueError("fused_gru_forward supports batch_first GRUs with biases")
    if not torch.is_grad_enabled() and not (gru.training and gru.dropout > 0):
        params = [p.detach() for layer in range(gru.num_layers) for p in _layer_parameters(gru, layer)]
        return load_extension().inference(x, params, gru.num_layers, lengths)
    if lengths is not None:
        raise ValueError("fused_gru_forward takes lengths under torch.no_grad in eval mode only")
    out = x
    for layer in range(gru.num_layers):
        if layer > 0 and gru.dropout > 0 and gru.training:
            out = _dropout(out, gru.dropout)
        out = GRULayer.apply(out, *_layer_parameters(gru, layer))
    return out
