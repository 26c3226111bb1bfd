"""The fused CPU GRU kernel against nn.GRU."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ROOT
from model.classifiers.fused_gru import (GRULayer, _build_directory, _dropout, _dropout_masks_match_bernoulli,
                                         fused_gru_forward, load_extension)
from model.classifiers.gru import PowerStateGRU
from model.classifiers.train import fit

try:
    load_extension()
except Exception as err:   # a machine without a compiler: the fallback is tested elsewhere
    pytest.skip(f"fused kernel unavailable: {err}", allow_module_level=True)


def _grads(out, gru, x, grad_out):
    return torch.autograd.grad(out, [x, *gru.parameters()], grad_out)


# hidden 64 fills the kernel's register blocks exactly, 13 leaves a remainder, 40 both
@pytest.mark.parametrize("batch,length,hidden", [(1, 37, 16), (3, 20, 16), (1, 25, 64), (2, 9, 13), (1, 11, 40)])
def test_float64_outputs_and_every_gradient_match_nn_gru(batch, length, hidden):
    torch.manual_seed(0)
    gru = nn.GRU(6, hidden, num_layers=2, bidirectional=True, batch_first=True, dropout=0.0).double()
    x = torch.randn(batch, length, 6, dtype=torch.float64, requires_grad=True)
    expected, _ = gru(x)
    got = fused_gru_forward(gru, x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    grad_out = torch.randn_like(expected)
    names = ["input"] + [n for n, _ in gru.named_parameters()]
    for name, g, e in zip(names, _grads(got, gru, x, grad_out), _grads(expected, gru, x, grad_out)):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=f"gradient of {name}")


@pytest.mark.parametrize("hidden", [64, 13])
def test_inference_without_grad_matches_nn_gru_and_keeps_nothing_for_backward(hidden):
    torch.manual_seed(3)
    gru = nn.GRU(6, hidden, num_layers=2, bidirectional=True, batch_first=True).double().eval()
    # large inputs saturate the gates, where sigmoid's exp over- and underflows
    x = 30 * torch.randn(3, 41, 6, dtype=torch.float64)
    with torch.no_grad():
        got = fused_gru_forward(gru, x)
        expected, _ = gru(x)
    assert got.grad_fn is None
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    gi = torch.zeros(2, 1, 5, 3 * hidden, dtype=torch.float64)
    weights = [gru.weight_hh_l0, gru.weight_hh_l0_reverse]
    biases = [gru.bias_ih_l0, gru.bias_ih_l0_reverse]
    _, gates, ghn = load_extension().forward(gi, [w.detach() for w in weights], [b.detach() for b in biases],
                                             [b.detach() for b in biases], keep_for_backward=False)
    assert gates.numel() == 0 and ghn.numel() == 0


def test_windows_side_by_side_give_nn_gru_probabilities_on_a_long_trace():
    """Inference steps a batch's windows together (matrix products per step): in float32 the
    state probabilities of a long trace cut into windows stay within 1e-5 of nn.GRU's, with the
    same most likely state in every bin. 13 windows: two full register blocks and a remainder."""
    torch.manual_seed(4)
    model = PowerStateGRU(5).eval()
    windows = torch.from_numpy(np.random.default_rng(4).normal(size=(13, 3000, 6)).astype(np.float32))
    with torch.no_grad():
        model.gru_impl = "torch"
        expected = torch.softmax(model(windows), dim=2)
        model.gru_impl = "fused"
        got = torch.softmax(model(windows), dim=2)
    assert (got - expected).abs().max().item() < 1e-5
    assert torch.equal(got.argmax(dim=2), expected.argmax(dim=2))


@pytest.mark.parametrize("hidden,dtype", [(64, torch.float32), (13, torch.float64)])
def test_unequal_lengths_run_each_sequence_as_if_alone_and_padding_never_leaks(hidden, dtype):
    """Sequence b is x[b, :lengths[b]]: the same output as nn.GRU on it alone, in both directions
    (the reverse one starts at the sequence's own end), zeros past it, and NaN padding, which
    would spread through any product that read it, reaches nothing."""
    torch.manual_seed(5)
    gru = nn.GRU(6, hidden, num_layers=2, bidirectional=True, batch_first=True).to(dtype).eval()
    lengths = torch.tensor([150, 1, 64, 65, 149, 7, 128])    # around the kernel's 64-step chunks
    x = torch.randn(len(lengths), 150, 6, dtype=dtype)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = float("nan")
    with torch.no_grad():
        got = fused_gru_forward(gru, x, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = gru(x[b:b + 1, :n])[0][0]
            torch.testing.assert_close(got[b, :n], alone, rtol=1e-5, atol=1e-6)
            assert torch.all(got[b, n:] == 0)


def test_lengths_are_refused_where_a_gradient_is_wanted():
    gru = nn.GRU(6, 8, batch_first=True, bidirectional=True)
    with pytest.raises(ValueError, match="lengths"):
        fused_gru_forward(gru, torch.randn(2, 5, 6), torch.tensor([5, 3]))


@pytest.mark.parametrize("directions,hidden,batch", [(1, 4, 2), (2, 4, 2), (2, 11, 1)])
def test_gradcheck_layer(directions, hidden, batch):
    torch.manual_seed(1)
    x = torch.randn(batch, 6, 5, dtype=torch.float64, requires_grad=True)
    params = []
    for _ in range(directions):
        params += [torch.randn(3 * hidden, 5, dtype=torch.float64) / 5 ** 0.5,
                   torch.randn(3 * hidden, hidden, dtype=torch.float64) / hidden ** 0.5,
                   torch.randn(3 * hidden, dtype=torch.float64), torch.randn(3 * hidden, dtype=torch.float64)]
    params = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(GRULayer.apply, (x, *params))


@pytest.mark.parametrize("shape,dtype,p,skip", [((1, 2450, 128), torch.float32, 0.8, 0), ((313,), torch.float32, 0.8, 1),
                                                 ((1,), torch.float32, 0.5, 0), ((5, 7, 3), torch.float64, 0.3, 5),
                                                 ((1249,), torch.float64, 0.999, 2)])
def test_dropout_masks_are_bernoulli_draw_for_draw(shape, dtype, p, skip):
    """Same masks as Tensor.bernoulli_ and the generator left where bernoulli_ leaves it, from
    any stream position (`skip` odd words first), across refills of the 624-word state."""
    def draw(fill):
        torch.manual_seed(7)
        torch.rand(skip)
        mask = torch.empty(shape, dtype=dtype)
        fill(mask)
        return mask, torch.rand(4)
    expected = draw(lambda mask: mask.bernoulli_(p))
    got = draw(lambda mask: load_extension().bernoulli_mask_(mask, p))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert _dropout_masks_match_bernoulli()


def test_dropout_equals_torch_dropout_bit_for_bit():
    x = torch.randn(1, 300, 128, requires_grad=True)
    torch.manual_seed(3)
    expected = torch.nn.functional.dropout(x, 0.2, training=True)
    torch.manual_seed(3)
    got = _dropout(x, 0.2)
    assert torch.equal(got, expected)
    grad = torch.randn_like(x)
    assert torch.equal(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(expected, x, grad)[0])


def test_float32_error_within_stock_float32_error():
    """Outputs and parameter gradients against a float64 reference: the kernel's float32 error
    (worst element) stays within twice stock nn.GRU's own float32 error."""
    torch.manual_seed(2)
    gru64 = nn.GRU(6, 64, num_layers=2, bidirectional=True, batch_first=True).double()
    gru32 = nn.GRU(6, 64, num_layers=2, bidirectional=True, batch_first=True)
    gru32.load_state_dict({k: v.float() for k, v in gru64.state_dict().items()})
    x64 = torch.randn(1, 500, 6, dtype=torch.float64)
    grad64 = torch.randn(1, 500, 128, dtype=torch.float64)
    reference = gru64(x64)[0]
    reference_grads = torch.autograd.grad(reference, list(gru64.parameters()), grad64)

    def errors(out):
        grads = torch.autograd.grad(out, list(gru32.parameters()), grad64.float())
        return ((out.double() - reference).abs().max().item(),
                max((g.double() - r).abs().max().item() for g, r in zip(grads, reference_grads)))

    stock_output, stock_grads = errors(gru32(x64.float())[0])
    fused_output, fused_grads = errors(fused_gru_forward(gru32, x64.float()))
    assert fused_output <= 2 * stock_output
    assert fused_grads <= 2 * stock_grads


def test_short_training_same_losses_either_implementation():
    rng = np.random.default_rng(0)
    xs = [torch.from_numpy(rng.normal(size=(1, 120, 6)).astype(np.float32)) for _ in range(4)]
    ys = [torch.from_numpy((x[0, :, 0].numpy() > 0).astype(np.int64)) for x in xs]
    losses = {}
    for impl in ("torch", "fused"):
        torch.manual_seed(0)
        model = PowerStateGRU(2, hidden_size=16, gru_impl=impl)   # dropout on: masks must agree
        result = fit(model, xs[:3], ys[:3], xs[3:], ys[3:], lr=3e-3, num_epochs=4, seed=0,
                     use_wandb=False, progress=False)
        losses[impl] = result.train_losses + list(result.val_losses.values())
    np.testing.assert_allclose(losses["fused"], losses["torch"], rtol=1e-4, atol=1e-5)


def test_a_killed_build_does_not_block_later_loads():
    """A build killed mid-way leaves torch's `lock` file; the next load must not wait on it forever.
    (Whether a `lock` file exists afterwards is torch's business: 2.14 keeps one by design.)"""
    load_extension()
    stale = _build_directory() / "lock"
    stale.touch()
    proc = subprocess.run([sys.executable, "-c", "from model.classifiers.fused_gru import load_extension; "
                           "load_extension()"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr     # the 120 s timeout fails the test if it waited


def test_a_changed_kernel_source_builds_in_its_own_directory(tmp_path, monkeypatch):
    """Rebuilding in place would swap the library under jobs that have it loaded."""
    from model.classifiers import fused_gru
    original = _build_directory()
    changed = tmp_path / "gru_recurrence.cpp"
    changed.write_text(fused_gru.SOURCES[0].read_text() + "\n// changed\n")
    monkeypatch.setattr(fused_gru, "SOURCES", [changed, *fused_gru.SOURCES[1:]])
    assert _build_directory() != original
    assert _build_directory().parent == original.parent


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _fresh_cpp_extension_import(import_it, monkeypatch, tmp_path):
    """Import torch.utils.cpp_extension anew as a CUDA build of torch on a machine without CUDA
    would (CUDA compiled in, CUDA_HOME set, no device); return the warnings logged."""
    import torch
    import torch.utils
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "12.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch.utils.cpp_extension")
    monkeypatch.setattr(torch.utils, "cpp_extension", None, raising=False)
    recorder = _Recorder()      # torch's loggers do not propagate to pytest's caplog
    logger = logging.getLogger("torch.utils.cpp_extension")
    logger.addHandler(recorder)
    try:
        import_it()
    finally:
        logger.removeHandler(recorder)
    return recorder.lines


def test_the_kernel_import_logs_no_cuda_warning_without_cuda(monkeypatch, tmp_path):
    from model.classifiers.fused_gru import _import_cpp_extension
    assert _fresh_cpp_extension_import(_import_cpp_extension, monkeypatch, tmp_path) == []


def test_a_plain_cpp_extension_import_would_log_the_cuda_warning(monkeypatch, tmp_path):
    """The control: the situation above is the one that prints the warning."""
    import importlib
    logged = _fresh_cpp_extension_import(lambda: importlib.import_module("torch.utils.cpp_extension"),
                                         monkeypatch, tmp_path)
    assert any("No CUDA runtime is found" in line for line in logged)


def test_the_same_torch_through_another_path_builds_in_its_own_directory(monkeypatch):
    """Another torch location compiles against other include paths: torch would rebuild in place
    while other processes wait on its lock."""
    original = _build_directory()
    monkeypatch.setattr(torch, "__file__", "/elsewhere/venv/lib/site-packages/torch/__init__.py")
    assert _build_directory() != original
    assert _build_directory().parent == original.parent


@pytest.fixture
def read_only_cache(tmp_path, monkeypatch):
    """The usual cache cannot be created (as under a read-only HOME); the temporary folder is
    tmp_path/tmp. Returns the fallback folder the kernel would use."""
    import tempfile
    from model.classifiers import fused_gru
    not_a_folder = tmp_path / "home_file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(not_a_folder / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr(fused_gru, "_extension", None)
    monkeypatch.setattr(fused_gru, "_build_error", None)
    import os
    return tmp_path / "tmp" / f"torch_extensions-{os.getuid()}"


@pytest.mark.parametrize("planted", ["open to everyone", "another user's", "a symbolic link"])
def test_a_shared_temporary_kernel_folder_someone_else_could_write_is_not_used(read_only_cache, tmp_path, planted):
    import os
    from model.classifiers import fused_gru
    if planted == "a symbolic link":
        (tmp_path / "theirs").mkdir(mode=0o700)
        read_only_cache.symlink_to(tmp_path / "theirs")
    else:
        read_only_cache.mkdir()
        os.chmod(read_only_cache, 0o777 if planted == "open to everyone" else 0o700)
        if planted == "another user's":
            if os.getuid() != 0:
                pytest.skip("only root can make a folder another user's")
            os.chown(read_only_cache, 65534, 65534)
    with pytest.raises(fused_gru.FusedGRUUnavailable, match="torch_extensions-"):
        fused_gru._writable_build_directory()


def test_the_private_temporary_kernel_folder_is_made_for_this_user_only(read_only_cache):
    import os
    import stat
    from model.classifiers import fused_gru
    build_dir = fused_gru._writable_build_directory()
    assert read_only_cache in build_dir.parents
    assert stat.S_IMODE(os.stat(read_only_cache).st_mode) == 0o700


def test_a_symlinked_build_lock_is_not_followed(tmp_path, monkeypatch):
    """A `build.flock` pointing at another file must not truncate it (nor be locked through)."""
    from torch.utils import cpp_extension
    from model.classifiers import fused_gru
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fused_gru, "_extension", None)
    monkeypatch.setattr(fused_gru, "_build_error", None)
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: "built")    # no compiling here
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    build_dir = _build_directory()
    build_dir.mkdir(parents=True)
    (build_dir / "build.flock").symlink_to(precious)
    with pytest.raises(fused_gru.FusedGRUUnavailable, match="build.flock"):
        load_extension()
    assert precious.read_text() == "keep me\n"


def test_a_racks_traces_share_forward_passes_and_each_gets_its_own_probabilities():
    """windowed_log_probabilities_many puts the windows of several traces, and whole short traces
    of one length, through the classifier together (the kernel steps them side by side), and each
    trace gets what it gets alone."""
    from model.generation.generator import windowed_log_probabilities_many
    torch.manual_seed(6)
    model = PowerStateGRU(4, gru_impl="fused")
    rng = np.random.default_rng(6)
    traces = [rng.normal(size=(n, 6)).astype(np.float32) for n in (3000, 700, 3000, 700, 500)]
    batches = []
    forward = model.forward
    model.forward = lambda x: batches.append(tuple(x.shape[:2])) or forward(x)
    together = windowed_log_probabilities_many(model, traces, window=1000, context=100, batch=4)
    assert sorted(batches) == [(1, 500), (2, 700), (2, 1200), (4, 1200)]   # 6 windows, 2 short, 1 short
    for features, got in zip(traces, together):
        alone = windowed_log_probabilities_many(model, [features], window=1000, context=100, batch=1)[0]
        np.testing.assert_allclose(np.exp(got), np.exp(alone), atol=1e-6)


def test_kernel_cache_falls_back_when_home_cannot_be_written(tmp_path, monkeypatch, capsys):
    import tempfile
    from torch.utils import cpp_extension
    from model.classifiers import fused_gru
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("")            # mkdir under it fails, as under a read-only HOME
    monkeypatch.setenv("HOME", str(not_a_folder))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(fused_gru, "_extension", None)
    monkeypatch.setattr(fused_gru, "_build_error", None)
    used = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: used.append(kw["build_directory"]) or "kernel")
    assert fused_gru.load_extension(verbose=False) == "kernel"
    assert used and used[0].startswith(str(tmp_path / "tmp"))
    assert capsys.readouterr().err.count("notice:") == 1
