"""Benchmark: seconds per training epoch with stock nn.GRU vs the fused CPU kernel.

    python -m model.benchmark                 # paper scale, one thread, about 1-2 minutes
    python -m model.benchmark --rounds 9
    python -m model.benchmark --generation    # a day of one server through the classifier instead
    python -m model.benchmark --site          # where a small site's server-days go, stage by stage

Generates paper-scale demo data (about 30 traces of about 2,450 bins per TP), then times, in
this one run, training (batch size 1, Adam, clipping) with `--gru_impl torch` and `fused`, in
interleaved rounds: each round a fused epoch over the training traces, then one stock step and
one fused step on the same trace (stock nn.GRU is too slow to time whole epochs of). It prints
every round and the medians: this machine's speed drifts from minute to minute, and rounds that
alternate keep both implementations under the same drift. The full 16-job grid at 500 epochs is
estimated from the median fused epoch, for --jobs 1 and --jobs <cores>.

The --jobs <cores> estimate uses fused epochs timed while <cores> one-thread trainings run at once,
as they do for most of a grid, so it includes their contention for memory and caches. Last, it
runs one small grid (two paper-scale jobs, --grid_epochs each) through the real launcher with
--jobs 1 and then --jobs <cores>, and prints the measured wall-time ratio; short jobs like these
are partly start-up, so that ratio is lower than the steady state of a long grid.

--generation times inference instead, as the generator and model.facility run it: one server's
day (345,600 bins of 0.25 s, the demo traces' features end to end) through the windowed
classifier with stock nn.GRU (batches of windows), the fused kernel as it ran until 2026-11-30
(16,384-bin windows one at a time, layer by layer: `stepwise`) and the fused kernel's batched
inference (the defaults), alternating in rounds, and prints seconds per server-day and their ratios.

--site runs a small site (--site_racks racks of --nodes_per_rack servers, --hours of Poisson
traffic) through model.facility's own code in this process and prints the CPU seconds per
server-day of each stage: requests and serving simulation, features, classifier, sampling,
roll-up, oversubscription, files, figures, and the rest (start-up, loading). Then, on the
same site's features, the classifier batched (the default) against the one-window-at-a-time path
in alternating rounds, with its arithmetic rate against torch.matmul on the same matrix shapes
(the practical ceiling on this machine). Without --results_dir it first trains a 1-epoch demo
job for the checkpoint (the timings do not depend on the weights).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from model.errors import ArgumentParser, run_cli


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the grid uses 1 per job)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (fused epoch, stock and fused step)")
    parser.add_argument("--together_epochs", type=int, default=3,
                        help="fused epochs per training when <cores> run at once")
    parser.add_argument("--grid_epochs", type=int, default=3,
                        help="epochs per job of the --jobs comparison (0: skip that comparison)")
    parser.add_argument("--generation", action="store_true", help="time a day of inference instead of training")
    parser.add_argument("--site", action="store_true", help="time a small site's stages instead of training")
    parser.add_argument("--site_racks", type=int, default=2, help="racks of the --site run")
    parser.add_argument("--nodes_per_rack", type=int, default=4, help="servers in a rack (--site)")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of traffic (--site)")
    parser.add_argument("--config", default="llama-3-70b_h100_tp4", help="the configuration (--site)")
    parser.add_argument("--results_dir", default=None,
                        help="where its checkpoint is (--site; default: train a 1-epoch demo job first)")
    args = parser.parse_args(argv)
    # torch and the measuring code load after the flags are read: --help stays instant
    import numpy as np
    import torch
    from model import config
    from model.classifiers.gru import PowerStateGRU, resolve_gru_impl
    from model.classifiers.train import make_optimizer, train_step
    from model.data import load_power_file
    from model.demo_data import write_demo_files
    from model.features import FeatureNorm, raw_features
    from model.grid import BUILT_IN
    from model.states import fit_power_states
    from model.timing import (concurrent_epoch_seconds, generation_benchmark, jobs_speedup, site_benchmark,
                              timed)
    torch.set_num_threads(args.threads)
    resolve_gru_impl("fused", torch.device("cpu"))    # builds the kernel now, not inside a timing
    if args.site:
        site_benchmark(args)
        return 0

    tmp = tempfile.TemporaryDirectory()
    data_dir = Path(tmp.name) / "data"
    path = write_demo_files(BUILT_IN, data_dir, seed=0, scale="paper", models=["llama-3-8b"], hardware=["a100"])[0]
    traces = load_power_file(path).traces_for_tp(1)
    states = fit_power_states([t.power for t in traces])
    norm = FeatureNorm.fit([raw_features(t.workload) for t in traces])
    xs = [torch.from_numpy(norm.apply(raw_features(t.workload))).unsqueeze(0) for t in traces]
    ys = [torch.from_numpy(states.label(t.power)).long() for t in traces]
    n_train = len(traces) - max(1, round(config.VAL_SPLIT * len(traces)))
    bins = np.mean([len(t) for t in traces])
    print(f"paper-scale data: {len(traces)} traces of {bins:.0f} bins on average; an epoch trains on "
          f"{n_train}; {args.threads} torch thread(s)")
    if args.generation:
        day = np.concatenate([x[0].numpy() for x in xs])
        generation_benchmark(np.resize(day, (345_600, day.shape[1])), states.num_states, args.rounds)
        tmp.cleanup()
        return 0

    models = {}
    for impl in ("fused", "torch"):
        torch.manual_seed(0)
        model = PowerStateGRU(states.num_states, gru_impl=impl)
        models[impl] = model, make_optimizer(model)
        train_step(*models[impl], xs[0], ys[0])            # warm-up
    print(f"{'round':>5}{'fused s/epoch':>15}{'stock s/step':>14}{'fused s/step':>14}{'ratio':>8}  (same trace)")
    epochs, ratios, stock_steps = [], [], []
    for round_ in range(args.rounds):
        epochs.append(sum(timed(train_step, *models["fused"], xs[i], ys[i]) for i in range(n_train)))
        i = round_ % n_train
        stock_steps.append(timed(train_step, *models["torch"], xs[i], ys[i]))
        fused_step = timed(train_step, *models["fused"], xs[i], ys[i])
        ratios.append(stock_steps[-1] / fused_step)
        print(f"{round_ + 1:5d}{epochs[-1]:15.2f}{stock_steps[-1]:14.3f}{fused_step:14.4f}{ratios[-1]:7.1f}x", flush=True)
    fused = float(np.median(epochs)) / n_train
    stock = float(np.median(stock_steps))
    print(f"median: fused {fused:.4f} s/trace ({fused * n_train:.2f} s/epoch), stock {stock:.3f} s/trace "
          f"({stock * n_train:.1f} s/epoch); speed-up, same traces side by side: {np.median(ratios):.1f}x")

    cores = os.cpu_count() or 1
    together = concurrent_epoch_seconds(xs[:n_train], ys[:n_train], states.num_states, cores,
                                        args.together_epochs) / n_train
    print(f"fused with {cores} one-thread trainings at once: {together:.4f} s/trace "
          f"({together / fused:.2f}x the time alone)")
    if cores > 1 and args.grid_epochs > 0:
        jobs_speedup(data_dir, Path(tmp.name), cores, args.grid_epochs)
    tmp.cleanup()
    jobs = len(BUILT_IN.cells())
    print(f"full grid, {jobs} jobs x {config.NUM_EPOCHS} epochs x {n_train} traces, training only (validation, "
          f"start-up and metrics add about 10 s a job):")
    for name, per_trace in (("torch", stock), ("fused", fused)):
        total = per_trace * n_train * config.NUM_EPOCHS * jobs
        parallel = total * (together / fused) / cores    # stock under the fused kernel's contention
        print(f"  {name}: --jobs 1 ~{total / 3600:.1f} h, --jobs {cores} ~{parallel / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    run_cli(main, "benchmark")
