"""Benchmark: seconds per training epoch with stock nn.GRU vs the fused CPU kernel.

    python -m model.benchmark                 # paper scale, one thread, about 2-3 minutes
    python -m model.benchmark --torch_traces 4

Generates paper-scale demo data (about 30 traces of about 2,450 bins per TP), then times, in
this one run and on the same traces, a training epoch (batch size 1, Adam, clipping) with
`--gru_impl torch` and `fused`, prints their ratio, and estimates the full 16-job grid at
500 epochs for --jobs 1 and --jobs <cores>. Stock nn.GRU is slow, so by default it is timed on a
subset of the traces and reported per trace.

Then it runs the same small grid (two paper-scale jobs, --grid_epochs each) through the real
launcher with --jobs 1 and --jobs <cores>, one after the other, and prints the measured
wall-time ratio, which the --jobs <cores> grid estimate uses instead of assuming linear scaling.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model import config
from model.classifiers.gru import PowerStateGRU, resolve_gru_impl
from model.classifiers.train import fit
from model.data import load_power_file
from model.demo_data import write_demo_files
from model.errors import ArgumentParser, run_cli
from model.features import FeatureNorm, raw_features
from model.grid import grid
from model.launcher import LaunchSettings, run_grid
from model.states import fit_power_states


def seconds_per_trace(impl: str, xs, ys, num_states: int, epochs: int) -> float:
    torch.manual_seed(0)
    model = PowerStateGRU(num_states, gru_impl=impl)
    fit(model, xs[:1], ys[:1], xs[:1], ys[:1], num_epochs=1, use_wandb=False, progress=False)  # warm-up
    started = time.perf_counter()
    fit(model, xs, ys, xs[:1], ys[:1], num_epochs=epochs, use_wandb=False, progress=False, val_every=10**9)
    return (time.perf_counter() - started) / (epochs * len(xs))


def jobs_speedup(data_dir: Path, work_dir: Path, cores: int, epochs: int) -> float:
    """Wall time of a two-job grid with --jobs 1 over that with --jobs <cores>, measured here."""
    configs = grid(["llama-3-8b"], ["a100"])
    walls = {}
    for jobs in (1, cores):
        launch = LaunchSettings(data_dir=data_dir, output_dir=work_dir / f"jobs{jobs}", num_epochs=epochs,
                                use_wandb=False, jobs=jobs)
        started = time.perf_counter()
        records, _ = run_grid(configs, launch, echo=lambda *_: None)
        walls[jobs] = time.perf_counter() - started
        if any(r.status != "succeeded" for r in records):
            raise RuntimeError(f"a benchmark job failed; see {launch.output_dir / config.LOGS_SUBDIR}")
    print(f"grid of {len(configs)} paper-scale jobs x {epochs} epochs through the launcher: "
          f"--jobs 1 {walls[1]:.1f} s, --jobs {cores} {walls[cores]:.1f} s, "
          f"speed-up {walls[1] / walls[cores]:.2f}x")
    return walls[1] / walls[cores]


def main() -> int:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grid uses 1 per job)")
    parser.add_argument("--torch_traces", type=int, default=3, help="traces to time stock nn.GRU on")
    parser.add_argument("--fused_epochs", type=int, default=1)
    parser.add_argument("--grid_epochs", type=int, default=3, help="epochs per job of the --jobs comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    resolve_gru_impl("fused", torch.device("cpu"))    # builds the kernel now, not inside a timing

    tmp = tempfile.TemporaryDirectory()
    data_dir = Path(tmp.name) / "data"
    path = write_demo_files(data_dir, seed=0, scale="paper", models=["llama-3-8b"], hardware=["a100"])[0]
    traces = load_power_file(path).traces_for_tp(1)
    states = fit_power_states(traces)
    norm = FeatureNorm.fit([raw_features(t) for t in traces])
    xs = [torch.from_numpy(norm.apply(raw_features(t))).unsqueeze(0) for t in traces]
    ys = [torch.from_numpy(states.label(t.power)).long() for t in traces]
    n_train = len(traces) - max(1, round(config.VAL_SPLIT * len(traces)))
    bins = np.mean([len(t) for t in traces])
    print(f"paper-scale data: {len(traces)} traces of {bins:.0f} bins on average; an epoch trains on "
          f"{n_train}; {args.threads} torch thread(s)")

    fused = seconds_per_trace("fused", xs[:n_train], ys[:n_train], states.num_states, args.fused_epochs)
    stock = seconds_per_trace("torch", xs[:args.torch_traces], ys[:args.torch_traces], states.num_states, 1)
    # the fused kernel, timed on the same traces as stock, for a like-for-like ratio
    fused_same = seconds_per_trace("fused", xs[:args.torch_traces], ys[:args.torch_traces], states.num_states, 1)
    print(f"{'':22}{'s/trace':>10}{'s/epoch':>10}")
    print(f"{'torch (nn.GRU)':22}{stock:10.3f}{stock * n_train:10.1f}")
    print(f"{'fused (C++ kernel)':22}{fused:10.3f}{fused * n_train:10.1f}")
    print(f"speed-up, same traces side by side: {stock / fused_same:.1f}x")

    cores = os.cpu_count() or 1
    speedup = jobs_speedup(data_dir, Path(tmp.name), cores, args.grid_epochs) if cores > 1 else 1.0
    tmp.cleanup()
    jobs = len(grid())
    for name, per_trace in (("torch", stock), ("fused", fused)):
        total = per_trace * n_train * config.NUM_EPOCHS * jobs
        print(f"full grid, {jobs} jobs x {config.NUM_EPOCHS} epochs, {name}: "
              f"--jobs 1 ~{total / 3600:.1f} h, --jobs {cores} ~{total / speedup / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark")
