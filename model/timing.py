"""What `python -m model.benchmark` measures, side by side in one run: training epochs, a day of
inference, a site's stages (model/benchmark.py is the command and says what each prints).
Kept apart from the command so that its --help does not load torch."""
from __future__ import annotations

import contextlib
import functools
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model import config
from model.classifiers.gru import PowerStateGRU
from model.classifiers.train import make_optimizer, train_step
from model.demo_data import write_demo_files
from model.features import raw_features
from model.grid import BUILT_IN
from model.launcher import LaunchSettings, job_template, run_grid


def timed(step, *args) -> float:
    started = time.perf_counter()
    step(*args)
    return time.perf_counter() - started


def _epoch_seconds_worker(task: tuple) -> float:
    xs, ys, num_states, epochs = task
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = PowerStateGRU(num_states, gru_impl="fused")
    optimizer = make_optimizer(model)
    train_step(model, optimizer, xs[0], ys[0])                 # warm-up
    return float(np.median([sum(timed(train_step, model, optimizer, x, y) for x, y in zip(xs, ys))
                            for _ in range(epochs)]))


def concurrent_epoch_seconds(xs, ys, num_states: int, workers: int, epochs: int) -> float:
    """Median fused epoch while `workers` one-thread trainings run at once, as --jobs <cores> runs
    its jobs for most of a grid (they share memory bandwidth and caches)."""
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return float(np.median(pool.map(_epoch_seconds_worker, [(xs, ys, num_states, epochs)] * workers)))


def jobs_speedup(data_dir: Path, work_dir: Path, cores: int, epochs: int) -> float:
    """Wall time of a two-job grid with --jobs 1 over that with --jobs <cores>, measured here."""
    configs = BUILT_IN.cells(["llama-3-8b"], ["a100"])
    walls = {}
    for jobs in (1, cores):
        launch = LaunchSettings(data_dir=data_dir, output_dir=work_dir / f"jobs{jobs}",
                                job=job_template(num_epochs=epochs, use_wandb=False), jobs=jobs)
        started = time.perf_counter()
        records, _ = run_grid(configs, launch, echo=lambda *_: None)
        walls[jobs] = time.perf_counter() - started
        if any(r.status != "succeeded" for r in records):
            raise RuntimeError(f"a benchmark job failed; see {launch.output_dir / config.LOGS_SUBDIR}")
    print(f"grid of {len(configs)} paper-scale jobs x {epochs} epochs through the launcher: "
          f"--jobs 1 {walls[1]:.1f} s, --jobs {cores} {walls[cores]:.1f} s, "
          f"speed-up {walls[1] / walls[cores]:.2f}x")
    return walls[1] / walls[cores]


def stepwise_fused_forward(gru: torch.nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The fused kernel's inference as it ran until 2026-11-30, for comparison: layer by layer,
    each layer's input products for the whole batch made by torch first, then the recurrence one
    sequence after another with matrix-vector products (the training kernel, nothing kept)."""
    from model.classifiers.fused_gru import _layer_parameters, load_extension
    out = x
    for layer in range(gru.num_layers):
        params = [p.detach() for p in _layer_parameters(gru, layer)]
        w_ih, w_hh, b_ih, b_hh = (params[i::4] for i in range(4))
        batch, steps, inputs = out.shape
        rows = out.contiguous().reshape(batch * steps, inputs)
        gi = rows.new_empty(len(w_ih), batch * steps, w_ih[0].shape[0])
        for d, w in enumerate(w_ih):
            torch.mm(rows, w.t(), out=gi[d])
        out = load_extension().forward(gi.view(len(w_ih), batch, steps, -1), w_hh, b_ih, b_hh,
                                       keep_for_backward=False)[0]
    return out


class _Stepwise(torch.nn.Module):
    """A PowerStateGRU's forward with stepwise_fused_forward in place of the batched kernel."""

    def __init__(self, model: PowerStateGRU):
        super().__init__()
        self.inner = model
        self.head = model.head           # windowed_log_probabilities_many reads head.out_features
        self.gru_impl = "fused"          # ... and gru_impl (window and batch are given here)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.inner.head(stepwise_fused_forward(self.inner.gru, features))


# the paths compared: name -> (module wrapper, window, windows per pass); stepwise ran 16,384-bin
# windows one at a time, batched uses the defaults (config.INFERENCE_WINDOW, INFERENCE_BATCH)
INFERENCE_PATHS = {"stepwise": (_Stepwise, 16384, 1),
                   "batched": (lambda model: _with_impl(model, "fused"), None, None)}


def inference_rounds(model: PowerStateGRU, features: list[np.ndarray], rounds: int,
                     paths: dict) -> dict[str, list[float]]:
    """CPU seconds of windowed inference over `features`, each path in turn, `rounds` times
    (process time: other programs on the machine slow the wall clock, not it)."""
    from model.generation.generator import windowed_log_probabilities_many
    seconds = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (wrap, window, batch) in paths.items():
            runner = wrap(model)
            started = time.process_time()
            windowed_log_probabilities_many(runner, features, window=window, batch=batch)
            seconds[name].append(time.process_time() - started)
    return seconds


def generation_benchmark(features: np.ndarray, num_states: int, rounds: int) -> None:
    """Seconds per server-day of windowed inference: stock, stepwise fused and batched fused, in
    alternating rounds."""
    torch.manual_seed(0)
    model = PowerStateGRU(num_states).eval()
    paths = {"stock": (lambda m: _with_impl(m, "torch"), None, None), **INFERENCE_PATHS}
    print(f"one server-day: {len(features)} bins; CPU seconds per round: " + ", ".join(paths), flush=True)
    seconds = inference_rounds(model, [features], rounds, paths)
    for round_ in range(rounds):
        print(f"{round_ + 1:5d}" + "".join(f"{seconds[name][round_]:10.2f}" for name in paths))
    median = {name: float(np.median(v)) for name, v in seconds.items()}
    ratio = lambda a, b: float(np.median(np.array(seconds[a]) / np.array(seconds[b])))
    print(f"median: stock {median['stock']:.2f} s, stepwise fused {median['stepwise']:.2f} s, batched fused "
          f"{median['batched']:.2f} s per server-day; side by side: batched {ratio('stock', 'batched'):.2f}x "
          f"stock, {ratio('stepwise', 'batched'):.2f}x stepwise")


def _with_impl(model: PowerStateGRU, impl: str) -> PowerStateGRU:
    model.gru_impl = impl
    return model


# Where a site's time goes: stage -> functions of model.facility's path, each timed wherever it is
# called (a call inside another timed one counts for the outer one only)
SITE_STAGES = {
    "requests and serving simulation": ["model.generation.requests_file:poisson_stream",
                                        "model.generation.generator:workload_from_requests"],
    "features": ["model.features:raw_features", "model.features:FeatureNorm.apply"],
    "classifier": ["model.generation.generator:windowed_log_probabilities_many"],
    "sampling": ["model.generation.generator:sample_trace"],
    "roll-up": ["model.sites.rollup:at_resolutions", "model.sites.rollup:profile_metrics",
                "model.sites.site:site_metrics"],
    "oversubscription": ["model.sites.report:oversubscription"],
    "files": ["model.sites.report:write_site_power", "model.sites.report:write_racks",
              "model.sites.report:write_frame", "model.sites.report:sizing_table", "model.outputs:write_text",
              "model.outputs:write_json", "model.outputs:file_sha256", "model.provenance:git_state",
              "model.provenance:environment"],
    "figures": ["model.sites.report:write_figures"],
}


@contextlib.contextmanager
def stage_timers(stages: dict[str, list[str]]):
    """CPU time of every call of the listed functions, by stage, while the block runs: each is replaced
    in its module and wherever a loaded model module imported it by name, then put back."""
    import importlib
    seconds = dict.fromkeys(stages, 0.0)
    active = [0]                           # timed calls under way: only the outermost counts
    undo = []

    def timed_version(stage, original):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if active[0]:
                return original(*args, **kwargs)
            active[0] += 1
            started = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[stage] += time.process_time() - started
                active[0] -= 1
        return wrapper

    for stage, targets in stages.items():
        for target in targets:
            module_name, _, qualified = target.partition(":")
            owner = importlib.import_module(module_name)
            *classes, name = qualified.split(".")
            for cls in classes:
                owner = getattr(owner, cls)
            original = getattr(owner, name)
            wrapper = timed_version(stage, original)
            places = [owner] if classes else [owner] + [m for key, m in list(sys.modules.items())
                                                        if key.startswith("model.") and m is not owner
                                                        and getattr(m, name, None) is original]
            for place in places:
                undo.append((place, name, original))
                setattr(place, name, wrapper)
    try:
        yield seconds
    finally:
        for place, name, original in reversed(undo):
            setattr(place, name, original)


def gru_flops_per_bin(model: PowerStateGRU) -> int:
    """Multiply-adds x 2 per bin of the classifier's GRU: each layer and direction's input and
    recurrent products (the head, a few per cent, is left out, as are the gates)."""
    gru, flops = model.gru, 0
    directions = 2 if gru.bidirectional else 1
    for layer in range(gru.num_layers):
        inputs = gru.input_size if layer == 0 else directions * gru.hidden_size
        flops += directions * 2 * (inputs + gru.hidden_size) * 3 * gru.hidden_size
    return flops


def matmul_ceiling(model: PowerStateGRU, rows: int = 4096, repeats: int = 20) -> float:
    """Flops per second of torch.matmul on the GRU's matrix shapes (each layer's input and
    recurrent products, in their proportions) with many rows at once: what this machine's BLAS
    reaches on them, the practical ceiling for the kernel."""
    gru = model.gru
    directions = 2 if gru.bidirectional else 1
    shapes = [(gru.input_size if layer == 0 else directions * gru.hidden_size, 3 * gru.hidden_size)
              for layer in range(gru.num_layers)] + [(gru.hidden_size, 3 * gru.hidden_size)] * gru.num_layers
    seconds, flops = 0.0, 0
    for k, n in shapes:
        a, w = torch.randn(rows, k), torch.randn(k, n)
        out = torch.empty(rows, n)
        torch.matmul(a, w, out=out)
        started = time.process_time()
        for _ in range(repeats):
            torch.matmul(a, w, out=out)
        seconds += (time.process_time() - started) / repeats
        flops += 2 * rows * k * n
    return flops / seconds


def site_benchmark(args) -> None:
    """Stage seconds per server-day of a small site through model.facility, then the classifier
    batched against stepwise on its features, and its flops per second against the ceiling."""
    from model.checkpoint import load_checkpoint
    from model.facility import build_site, parse_args as facility_args
    from model.command_settings import FacilitySettings
    from model.generation.generator import Generator
    from model.generation.requests_file import poisson_stream
    from model.sites.layout import Layout
    from model.sites.site import node_traffic_seed
    tmp = tempfile.TemporaryDirectory()
    results, job = args.results_dir, args.config
    if results is None:
        results = Path(tmp.name) / "results"
        results_job(Path(tmp.name), results, job)
    layout = Layout(1, args.site_racks, args.nodes_per_rack)
    # facility rounds up to 15 minutes, and every server also runs its warm-up (--warmup_s)
    warmup_h = FacilitySettings().warmup_s / 3600
    server_days = layout.n_nodes * (math.ceil(args.hours * 4) / 4 + warmup_h) / 24
    argv = ["--config", job, "--results_dir", str(results), "--rows", "1", "--racks_per_row",
            str(args.site_racks), "--nodes_per_rack", str(args.nodes_per_rack), "--rate_per_node", "0.5",
            "--duration", str(args.hours * 3600), "--row_limit_kw", "60", "--output_dir", str(Path(tmp.name) / "site"),
            "--no_progress", "--jobs", "1"]
    print(f"a site of {layout.n_nodes} servers ({args.site_racks} racks of {args.nodes_per_rack}), {args.hours:g} h "
          f"of Poisson traffic after a {warmup_h * 60:g}-minute warm-up, one process: {server_days:g} server-days "
          "simulated", flush=True)
    with stage_timers(SITE_STAGES) as seconds, open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        started = time.process_time()
        build_site(facility_args(argv))
        total = time.process_time() - started
    seconds["rest (start-up, loading)"] = total - sum(seconds.values())
    print("CPU seconds (other programs on the machine slow the wall clock, not these):")
    print(f"{'stage':34}{'seconds':>9}{'s per server-day':>18}{'share':>8}")
    for stage, value in seconds.items():
        print(f"{stage:34}{value:9.2f}{value / server_days:18.3f}{value / total:8.0%}")
    print(f"{'total':34}{total:9.2f}{total / server_days:18.3f}   (figures and start-up are per site, "
          "not per server)")

    gen = Generator(load_checkpoint(config.checkpoint_path(results, job)))
    if gen.classifier.gru_impl != "fused":
        print("the fused kernel does not build here: no batched-versus-stepwise comparison")
        tmp.cleanup()
        return
    features = []
    pool = (gen.ckpt.input_tokens, gen.ckpt.output_tokens)
    n_bins = math.ceil(args.hours * 3600 / 900) * round(900 / gen.bin_s)     # whole 15 minutes, as facility
    for node in range(layout.n_nodes):             # the site's own traffic, as generate_rack draws it
        requests = poisson_stream(0.5, n_bins * gen.bin_s, pool, node_traffic_seed(0, node))
        features.append(gen.ckpt.norm.apply(raw_features(gen.workload(requests, n_bins))))
    seconds = inference_rounds(gen.classifier, features, args.rounds, INFERENCE_PATHS)
    print("classifier on the site's features, CPU s per server-day:  round  stepwise  batched  ratio")
    for round_ in range(args.rounds):
        step, batch = seconds["stepwise"][round_], seconds["batched"][round_]
        print(f"{'':56}{round_ + 1:5d}{step / server_days:10.3f}{batch / server_days:9.3f}{step / batch:6.2f}x")
    batched = float(np.median(seconds["batched"]))
    ratio = float(np.median(np.array(seconds["stepwise"]) / np.array(seconds["batched"])))
    window, context = config.INFERENCE_WINDOW["fused"], config.INFERENCE_CONTEXT
    computed = sum(len(f) if len(f) <= window + 2 * context else
                   -(-len(f) // window) * (window + 2 * context) for f in features)    # context included
    rate = gru_flops_per_bin(gen.classifier) * computed / batched       # over the whole classifier's time
    ceiling = matmul_ceiling(gen.classifier)
    print(f"batched vs stepwise, side by side: {ratio:.2f}x; batched classifier {rate / 1e9:.1f} GFlop/s "
          f"(its GRU's products over all its time), torch.matmul on the same shapes {ceiling / 1e9:.1f} GFlop/s "
          f"({rate / ceiling:.0%} of it)")
    tmp.cleanup()


def results_job(root: Path, results: Path, job: str) -> None:
    """A 1-epoch demo job of `job`'s configuration, for its checkpoint."""
    from model.job import run_job
    from model.settings import JobSettings
    model, hardware, tp = job.rsplit("_", 2)
    data = write_demo_files(BUILT_IN, root / "data", seed=0, models=[model], hardware=[hardware])[0]
    run_job(JobSettings(data_file=str(data), model=model, hardware=hardware, tp=int(tp.removeprefix("tp")),
                        num_epochs=1, output_dir=str(results), use_wandb=False, progress=False))


