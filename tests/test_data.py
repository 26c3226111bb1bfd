"""Loading and validating data files, and the demo generator."""
from __future__ import annotations


import numpy as np
import pytest

from conftest import ROOT, load_arrays, run_cli, save_arrays
from model.data import DataError, load_power_file, true_length
from model.demo_data import hardware_params, llm_params, per_gpu_watts, write_demo_files
from model.grid import BUILT_IN


def small_arrays(n=4, t=150, r=20, tps=(1, 1, 2, 2)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ts = 1000.0 + 0.25 * np.arange(t)
    return {
        "timestamps": np.tile(ts, (n, 1)),
        "power_traces": rng.uniform(80, 300, (n, t)),
        "prefill_tokens": rng.integers(0, 100, (n, t)),
        "decode_tokens": rng.integers(0, 100, (n, t)),
        "active_requests": rng.integers(0, 5, (n, t)),
        "request_timestamps": np.tile(np.sort(rng.uniform(1000, 1000 + 0.25 * t, r)), (n, 1)),
        "input_tokens": rng.integers(1, 500, (n, r)),
        "output_tokens": rng.integers(1, 500, (n, r)),
        "tensor_parallelism": np.asarray(tps),
    }


def expect_error(path, *fragments):
    with pytest.raises(DataError) as err:
        load_power_file(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_loads_valid_file(tmp_path):
    data = load_power_file(save_arrays(tmp_path / "ok.npz", small_arrays()))
    assert data.tp_values == [1, 2]
    assert [len(t) for t in data.traces] == [150] * 4
    assert len(data.traces[0].request_times) == 20


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.npz", "not found")


def test_empty_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    expect_error(tmp_path / "empty.npz", "empty")


def test_text_file_named_npz(tmp_path):
    (tmp_path / "text.npz").write_text("timestamps,power\n1,2\n")
    expect_error(tmp_path / "text.npz", "not a readable")


def test_truncated_file(tmp_path):
    good = save_arrays(tmp_path / "good.npz", small_arrays())
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect_error(tmp_path / "cut.npz")


def test_pickled_objects_are_refused(tmp_path):
    arrays = small_arrays()
    arrays["tensor_parallelism"] = np.array([1, 1, 2, {"evil": True}], dtype=object)
    expect_error(save_arrays(tmp_path / "pickle.npz", arrays), "pickle")


def test_missing_key_lists_keys_found(tmp_path):
    arrays = small_arrays()
    del arrays["decode_tokens"]
    message = expect_error(save_arrays(tmp_path / "m.npz", arrays), "'decode_tokens'")
    assert "power_traces" in message and "keys found" in message


def test_shapes_disagree(tmp_path):
    arrays = small_arrays()
    arrays["active_requests"] = arrays["active_requests"][:, :100]
    expect_error(save_arrays(tmp_path / "s.npz", arrays), "'active_requests'", "shape")


def test_request_shapes_disagree(tmp_path):
    arrays = small_arrays()
    arrays["output_tokens"] = arrays["output_tokens"][:, :5]
    expect_error(save_arrays(tmp_path / "s.npz", arrays), "'output_tokens'")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -5.0])
def test_bad_watts_inside_a_trace(tmp_path, bad):
    arrays = small_arrays()
    arrays["power_traces"][2, 40] = bad
    expect_error(save_arrays(tmp_path / "w.npz", arrays), "trace 2", "watts", "bin 40")


def test_bad_watts_in_padding_are_ignored(tmp_path):
    arrays = small_arrays()
    arrays["trace_lengths"] = np.array([150, 150, 100, 150])
    arrays["power_traces"][2, 120] = np.nan
    assert len(load_power_file(save_arrays(tmp_path / "p.npz", arrays)).traces[2]) == 100


def test_tp_not_in_file_lists_the_tps(tmp_path):
    data = load_power_file(save_arrays(tmp_path / "t.npz", small_arrays()))
    with pytest.raises(DataError, match=r"no traces with TP 4; the file holds TP 1, 2"):
        data.traces_for_tp(4)


def test_tp_with_one_trace(tmp_path):
    data = load_power_file(save_arrays(tmp_path / "t.npz", small_arrays(tps=(1, 1, 1, 2))))
    with pytest.raises(DataError, match="TP 2 has 1 trace"):
        data.traces_for_tp(2)


def test_padding_ramp_to_zero_with_repeated_power(tmp_path):
    arrays = small_arrays()
    ts = arrays["timestamps"][1]
    ts[100:] = np.linspace(ts[99] / 2, 0, 50)          # first real tool: ramp falling to 0
    arrays["power_traces"][1, 100:] = arrays["power_traces"][1, 99]
    data = load_power_file(save_arrays(tmp_path / "ramp.npz", arrays))
    assert len(data.traces[1]) == 100 and len(data.traces[0]) == 150


def test_padding_zeros(tmp_path):
    arrays = small_arrays()
    arrays["timestamps"][3, 120:] = 0.0
    arrays["power_traces"][3, 120:] = 0.0
    assert len(load_power_file(save_arrays(tmp_path / "zeros.npz", arrays)).traces[3]) == 120


def test_trace_lengths_are_authoritative(tmp_path):
    arrays = small_arrays()
    arrays["trace_lengths"] = np.array([150, 90, 150, 110])
    data = load_power_file(save_arrays(tmp_path / "l.npz", arrays))
    assert [len(t) for t in data.traces] == [150, 90, 150, 110]


def test_true_length_rule():
    assert true_length(np.array([5.0, 6.0, 7.0, 3.0, 1.0, 0.0])) == 3
    assert true_length(np.array([5.0, 6.0, 0.0, 0.0])) == 2
    assert true_length(np.array([0.0, 0.25, 0.5, 0.0])) == 3      # relative clock starting at 0
    assert true_length(np.array([1.0, 2.0, 3.0])) == 3


def test_requests_with_zero_timestamp_are_padding(tmp_path):
    arrays = small_arrays()
    arrays["request_timestamps"][0, 15:] = 0.0
    assert len(load_power_file(save_arrays(tmp_path / "r.npz", arrays)).traces[0].request_times) == 15


# --- demo generator -------------------------------------------------------------------------

def test_demo_writes_the_grid_files_loadable_both_ways(demo_dir):
    names = sorted(p.name for p in demo_dir.glob("*.npz"))
    assert names == sorted({c.data_file_name for c in BUILT_IN.cells()})
    for m in BUILT_IN.models:
        for hw in ("a100", "h100"):
            path = demo_dir / BUILT_IN.data_file_name(m.key, hw)
            data = load_power_file(path)
            assert data.tp_values == list(m.tp_values)
            raw = load_arrays(path)
            assert "trace_lengths" in raw
            assert min(len(t) for t in data.traces) >= 200


def test_demo_same_seed_identical_other_seed_different(tmp_path):
    a = write_demo_files(BUILT_IN, tmp_path / "a", seed=3, models=["llama-3-8b"], hardware=["a100"])[0]
    b = write_demo_files(BUILT_IN, tmp_path / "b", seed=3, models=["llama-3-8b"], hardware=["a100"])[0]
    c = write_demo_files(BUILT_IN, tmp_path / "c", seed=4, models=["llama-3-8b"], hardware=["a100"])[0]
    arrays_a, arrays_b, arrays_c = load_arrays(a), load_arrays(b), load_arrays(c)
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    assert not np.array_equal(arrays_a["power_traces"], arrays_c["power_traces"])


def test_demo_per_gpu_watts_in_hardware_ranges(demo_dir):
    for m in BUILT_IN.models:
        for hw, (idle_lo, idle_hi, ceiling) in {"a100": (55, 85, 400), "h100": (95, 145, 700)}.items():
            data = load_power_file(demo_dir / BUILT_IN.data_file_name(m.key, hw))
            per_gpu = [trace.power / trace.tp for trace in data.traces]
            assert max(p.max() for p in per_gpu) < ceiling
            idle = min(np.percentile(p, 5) for p in per_gpu)   # the quietest runs sit at idle
            assert idle_lo <= idle <= idle_hi, (m.key, hw, idle)


def test_demo_watts_rise_with_load(demo_dir):
    data = load_power_file(demo_dir / "vllm-benchmark_llama-3-70b_h100.npz")
    for trace in data.traces:
        if trace.active_requests.std() > 0:
            assert np.corrcoef(trace.active_requests, trace.power)[0, 1] > 0.3
    busy = np.mean([t.power.mean() for t in data.traces if len(t.request_times) > 150])
    quiet = np.mean([t.power.mean() for t in data.traces if len(t.request_times) < 20])
    assert busy > quiet * 1.3


def test_power_model_h100_above_a100_and_70b_above_8b():
    prefill, decode, batch = np.array([0.0, 0.3, 0.0]), np.array([0.0, 0.7, 1.0]), np.array([0, 8, 40])
    small, big = llm_params(BUILT_IN.models_by_key["llama-3-8b"]), llm_params(BUILT_IN.models_by_key["llama-3-70b"])
    a100, h100 = hardware_params(400.0), hardware_params(700.0)
    assert np.all(per_gpu_watts(h100, small, 120, prefill, decode, batch)
                  > per_gpu_watts(a100, small, 70, prefill, decode, batch))
    busy = slice(1, 3)
    assert np.all(per_gpu_watts(a100, big, 70, prefill, decode, batch)[busy]
                  > per_gpu_watts(a100, small, 70, prefill, decode, batch)[busy])


@pytest.fixture
def example_grid():
    """docs/grid.example.toml (it has an H200 and a 32B model)."""
    return ROOT / "docs" / "grid.example.toml"


def test_demo_data_follows_the_grid_file_gpus_by_nameplate_and_llms_by_size(example_grid, tmp_path):
    from model.demo_data import main
    from model.grid import load_grid
    grid = load_grid(example_grid)
    assert main(["--grid", str(example_grid), "--output_dir", str(tmp_path), "--rates", "2"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == sorted(
        grid.data_file_name(m, hw) for m in ("llama-3-8b", "llama-3-70b", "qwen-2.5-32b") for hw in ("h100", "h200"))
    qwen = load_power_file(tmp_path / grid.data_file_name("qwen-2.5-32b", "h200"))
    assert qwen.tp_values == [2, 4]
    h200 = hardware_params(700.0)
    for trace in qwen.traces:         # below the nameplate of its GPUs, not below their idle
        assert 0.9 * h200.idle_w[0] * trace.tp <= trace.power.min() and trace.power.max() < 700 * trace.tp
    small, mid, big = (llm_params(grid.models_by_key[k]) for k in ("llama-3-8b", "qwen-2.5-32b", "llama-3-70b"))
    assert small.step_s < mid.step_s < big.step_s and small.prefill_tok_s > mid.prefill_tok_s > big.prefill_tok_s
    assert hardware_params(grid.gpu_tdp_w["h200"]) == hardware_params(700.0)
    big = hardware_params(1000.0)       # beyond the H100: busier, faster, still below nameplate
    assert big.idle_w[0] > 100.0 and big.speed > 1.9 and 680.0 < big.peak_w < 1000.0


def test_demo_data_names_a_model_whose_size_it_cannot_tell(tmp_path):
    from model.demo_data import main
    from model.errors import InputError
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('[[models]]\nkey = "mystery"\ntp = [1]\nlabel = "Mystery"\n[hardware]\nb200 = 1000\n')
    with pytest.raises(InputError, match="'mystery'.*size_b"):
        main(["--grid", str(grid_file), "--output_dir", str(tmp_path / "out")])
    grid_file.write_text(grid_file.read_text().replace('label = "Mystery"', 'label = "Mystery"\nsize_b = 13'))
    assert main(["--grid", str(grid_file), "--output_dir", str(tmp_path / "out")]) == 0


def test_a_fifo_as_data_file_is_refused_without_blocking(tmp_path):
    from conftest import fails_instead_of_hanging, fifo
    pipe = fifo(tmp_path / "vllm-benchmark_llama-3-8b_a100.npz")
    with fails_instead_of_hanging(), pytest.raises(DataError, match="named pipe"):
        load_power_file(pipe)


@pytest.mark.parametrize("broken,outcome", [(2, "note"), ("most", "error")])
def test_negative_or_nan_request_times_are_not_dropped_as_padding_silently(demo_file, tmp_path, capsys, broken,
                                                                           outcome):
    arrays = load_arrays(demo_file)
    times = arrays["request_timestamps"]
    real = np.flatnonzero(times[0] > 0)
    chosen = real[:2] if broken == 2 else real[: len(real) // 2 + 1]
    times[0, chosen[::2]] = -5.0
    times[0, chosen[1::2]] = np.nan
    path = save_arrays(tmp_path / demo_file.name, arrays)
    if outcome == "error":
        with pytest.raises(DataError, match="negative or NaN arrival"):
            load_power_file(path)
        return
    data = load_power_file(path)
    assert "trace 0: 2 request(s) with a negative or NaN arrival time are dropped" in capsys.readouterr().err
    assert len(data.traces[0].request_times) == len(real) - 2


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e7])
def test_watts_scaled_out_of_any_plausible_range_are_refused(demo_file, tmp_path, scale):
    arrays = load_arrays(demo_file)
    arrays["power_traces"] = arrays["power_traces"] * scale
    path = save_arrays(tmp_path / demo_file.name, arrays)
    with pytest.raises(DataError, match="another unit, or scaled"):
        load_power_file(path)


@pytest.mark.slow
def test_demo_refuses_to_overwrite_a_measured_file(demo_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    arrays = load_arrays(demo_file)
    del arrays["simulated"]                  # as a measured file: no simulation mark
    real = save_arrays(data / demo_file.name, arrays)
    before = real.read_bytes()
    result = run_cli("run_all_training.py", "--demo", "--data_dir", str(data), "--models", "llama-3-8b",
                     "--output_dir", str(tmp_path / "out"), "--no_wandb", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to overwrite" in result.stderr and "Traceback" not in result.stderr
    assert real.read_bytes() == before
    assert sorted(p.name for p in data.iterdir()) == [demo_file.name]


def test_demo_rewrites_its_own_files(tmp_path):
    from model.demo_data import write_demo_files
    first = write_demo_files(BUILT_IN, tmp_path, models=["llama-3-8b"], hardware=["a100"])
    assert write_demo_files(BUILT_IN, tmp_path, models=["llama-3-8b"], hardware=["a100"]) == first


def without_lengths(demo_file, tmp_path, change):
    arrays = load_arrays(demo_file)
    del arrays["trace_lengths"]
    change(arrays)
    return save_arrays(tmp_path / demo_file.name, arrays)


def test_backwards_timestamp_is_reported_with_the_bins_dropped(demo_file, tmp_path, capsys):
    from model.data import load_power_file
    length = int(load_arrays(demo_file)["trace_lengths"][0])

    def repeat_one(arrays):
        arrays["timestamps"][0, 200] = arrays["timestamps"][0, 199]
    data = load_power_file(without_lengths(demo_file, tmp_path, repeat_one))
    assert len(data.traces[0]) == 200
    err = capsys.readouterr().err
    assert "trace 0" in err and f"{length - 200} bins" in err


def test_backwards_timestamp_early_in_a_trace_is_refused(demo_file, tmp_path):
    from model.data import DataError, load_power_file

    def repeat_early(arrays):
        arrays["timestamps"][0, 20] = arrays["timestamps"][0, 19]
    with pytest.raises(DataError, match="trace 0: timestamps stop increasing at bin 20"):
        load_power_file(without_lengths(demo_file, tmp_path, repeat_early))


def test_requests_on_another_clock_are_refused_or_counted(demo_file, tmp_path, capsys):
    from model.data import DataError, load_power_file
    arrays = load_arrays(demo_file)
    times = arrays["request_timestamps"]
    moved = times.copy()
    moved[0][moved[0] > 0] += 1e6                 # every request of trace 0 on another clock
    with pytest.raises(DataError, match="trace 0: .* requests arrive outside"):
        load_power_file(save_arrays(tmp_path / "moved.npz", arrays | {"request_timestamps": moved}))
    one = times.copy()
    one[1][np.flatnonzero(one[1] > 0)[0]] += 1e6  # one request of trace 1
    load_power_file(save_arrays(tmp_path / demo_file.name, arrays | {"request_timestamps": one}))
    assert f"trace 1: 1 of {int(np.sum(times[1] > 0))} requests" in capsys.readouterr().err


def test_npz_declaring_more_data_than_it_holds_is_refused_before_allocating(demo_file, tmp_path):
    import zipfile
    from model.data import DataError, load_power_file
    arrays = load_arrays(demo_file)
    path = save_arrays(tmp_path / demo_file.name, arrays)
    crafted = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "power_traces.npy":    # same bytes, a header claiming 596 GiB
                header = np.lib.format.header_data_from_array_1_0(np.zeros(0))
                header["shape"] = (80_000_000, 1000)
                buffer = __import__("io").BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                data = buffer.getvalue() + data[128:]
            target.writestr(info.filename, data)
    with pytest.raises(DataError, match="'power_traces' declares 640,000,000,000 bytes"):
        load_power_file(crafted)


def test_unreadable_data_file_is_not_called_a_broken_zip(demo_file, tmp_path, monkeypatch):
    from model import data as data_module
    path = save_arrays(tmp_path / demo_file.name, load_arrays(demo_file))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(data_module, "open", denied, raising=False)
    with pytest.raises(data_module.DataError, match="cannot be read: Permission denied"):
        data_module.load_power_file(path)


def test_symlink_loop_is_not_called_missing(tmp_path):
    from model.data import DataError, load_power_file
    (tmp_path / "a.npz").symlink_to(tmp_path / "b.npz")
    (tmp_path / "b.npz").symlink_to(tmp_path / "a.npz")
    with pytest.raises(DataError, match="symbolic link"):
        load_power_file(tmp_path / "a.npz")
