"""A whole site's load: every node generated, rolled up into racks, rows and the facility.

    result = run_site(plan, jobs=2)          # plan: layout, configurations, traffic, period
    result = run_site_on_slurm(plan, slurm, racks_per_task=8, folder=out / "slurm")
    rows = site_metrics(plan, result)        # method, level, resolution_s, metric, value

Each rack is generated in one worker (its nodes' request streams through the classifier in
turn), and only rack sums, node statistics and counts come back: memory holds the racks and the
site, never every node at full resolution (`save_nodes_dir` writes the nodes to disk instead).
Workers are local processes or the tasks of one Slurm array; assemble() joins their racks
either way, so both give the same numbers.
Node = GPU watts + non-GPU watts; rack = sum of its nodes; row = sum of its racks; site IT =
sum of the rows; site total = IT x PUE. Baselines: the site baselines of
model/generation/methods.py, each node at the method's constant GPU watts + non-GPU (`tdp`: TP x
GPU nameplate power; `mean`: its training mean).
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import Checkpoint, load_checkpoint
from model.generation.generator import Generator, Requests
from model.generation.methods import site_baselines, tdp_watts
from model.nameplate import above_nameplate
from model.outputs import write_npz
from model.generation.requests_file import poisson_stream
from model.sites.layout import Layout
from model.slurm import array_results
from model.slurm_settings import SlurmSettings
from model.sites.rollup import (METRICS, RESOLUTIONS_S, at_resolutions, diversity_factor, energy_per,
                                profile_metrics, worst)

LEVELS = ("node", "rack", "row", "site")
WORST_LEVELS = {"rack": "worst_rack", "row": "worst_row"}    # beside the means of racks and rows


@dataclass
class Plan:
    layout: Layout
    rack_jobs: list[str]                  # the configuration (job name) of each rack
    checkpoints: dict[str, Path]          # job name -> checkpoint file
    n_bins: int
    bin_s: float
    non_gpu_w: float
    pue: float
    seed: int
    sampling: str
    node_requests: list[Requests] | None = None     # a site request stream split over the nodes
    rate_per_node: float | None = None              # or Poisson traffic per node ...
    diurnal: np.ndarray | None = None               # ... shaped by the hour of the day
    save_nodes_dir: Path | None = None
    warmup_s: float = 0.0                           # simulated before t = 0, then discarded

    @property
    def warmup_bins(self) -> int:
        return int(np.ceil(self.warmup_s / self.bin_s - 1e-9))


@dataclass
class SiteResult:
    racks: np.ndarray                     # (racks, bins) watts, GPU + non-GPU
    node_peaks: np.ndarray                # (nodes, resolutions) each node's own peak
    node_metrics: list[dict]              # per node: resolution -> profile metrics
    requests: np.ndarray                  # (nodes, 3) requests, input tokens, output tokens served
    bins_above_nameplate: np.ndarray      # (nodes,) bins whose GPU watts exceed TP x nameplate
    constants: dict[str, np.ndarray] = field(default_factory=dict)   # baseline -> (nodes,) watts
    traffic: list[dict] = field(default_factory=list)     # per node: its extrapolation.traffic_check


_generators: dict[Path, Generator] = {}


def _generator(path: Path) -> Generator:
    if path not in _generators:          # one load per worker process and checkpoint
        _generators[path] = Generator(load_checkpoint(path))
    return _generators[path]


def baseline_watts(ckpt: Checkpoint, non_gpu_w: float) -> dict[str, float]:
    """One node's constant watts under each site baseline (model/generation/methods.py)."""
    return {m.name: m.constant_watts(ckpt) + non_gpu_w for m in site_baselines()}


def node_traffic_seed(seed: int, node: int) -> int:
    """The seed of node `node`'s Poisson requests in a site of seed `seed` (far apart from the
    nodes' sampling seeds, seed + node)."""
    return seed + 1_000_003 * (node + 1)


def warmup_requests(plan: Plan, node: int, stream: Requests, pool) -> Requests:
    """What node `node` serves in the warm-up, [-warmup_s, 0): with Poisson traffic more of the
    same process (its own seed; the diurnal profile's hours before midnight), with a request
    stream the stream's own first warmup_s seconds replayed (the traffic the site starts in)."""
    w = plan.warmup_bins * plan.bin_s
    if plan.node_requests is not None:
        first = stream.arrival_s < w
        return Requests(stream.arrival_s[first] - w, stream.input_tokens[first], stream.output_tokens[first])
    return poisson_stream(plan.rate_per_node, w, pool, [plan.seed, node, 1], plan.diurnal, start_s=-w)


def with_warmup(stream: Requests, before: Requests, warmup_s: float) -> Requests:
    """`before` (arrivals in [-warmup_s, 0)) then `stream`, shifted so that the warm-up starts at 0."""
    return Requests(np.concatenate([before.arrival_s, stream.arrival_s]) + warmup_s,
                    np.concatenate([before.input_tokens, stream.input_tokens]),
                    np.concatenate([before.output_tokens, stream.output_tokens]))


def generate_rack(plan: Plan, rack: int) -> tuple:
    """One rack's nodes: their summed watts, each node's statistics, served requests and bins
    above nameplate. Each node runs plan.warmup_bins first, which are dropped: its queue and the
    classifier's context start full, as in steady service, not empty at t = 0."""
    torch.set_num_threads(1)             # one worker per core
    gen = _generator(plan.checkpoints[plan.rack_jobs[rack]])
    nodes = list(plan.layout.nodes_of_rack(rack))
    pool = (gen.ckpt.input_tokens, gen.ckpt.output_tokens)
    if plan.node_requests is not None:
        streams = [plan.node_requests[n] for n in nodes]
    else:
        streams = [poisson_stream(plan.rate_per_node, plan.n_bins * plan.bin_s, pool,
                                  node_traffic_seed(plan.seed, n), plan.diurnal) for n in nodes]
    warm = plan.warmup_bins
    warmed = [with_warmup(s, warmup_requests(plan, n, s, pool), warm * plan.bin_s) if warm else s
              for n, s in zip(nodes, streams)]
    traces = gen.generate_many(warmed, plan.n_bins + warm, [plan.seed + n for n in nodes], plan.sampling,
                               warmup_bins=warm)
    rack_watts = np.zeros(plan.n_bins)
    peaks, stats, served = [], [], []
    above = [int((trace.watts > tdp_watts(gen.ckpt)).sum()) for trace in traces]
    for node, stream, trace in zip(nodes, streams, traces):
        watts = trace.watts + plan.non_gpu_w
        rack_watts += watts
        levels = at_resolutions(watts, plan.bin_s)
        stats.append({r: profile_metrics(w) for r, w in levels.items()})
        # by position in RESOLUTIONS_S: one finer than the bins (or not a whole number of them) is NaN
        peaks.append([levels[r].max() if r in levels else float("nan") for r in RESOLUTIONS_S])
        # the period's requests only: a requests file may run past --duration, and the warm-up's are before it
        period = (stream.arrival_s >= 0) & (stream.arrival_s < plan.n_bins * plan.bin_s)
        served.append([int(period.sum()), stream.input_tokens[period].sum(), stream.output_tokens[period].sum()])
        if plan.save_nodes_dir is not None:
            write_npz(Path(plan.save_nodes_dir) / f"node_{node:05d}.npz",
                      {"watts": watts.astype(np.float32), "states": trace.states.astype(np.int8),
                       "bin_s": np.array(plan.bin_s), "rack": np.array(rack)})
    return rack, rack_watts, peaks, stats, served, above, [trace.traffic for trace in traces]


def _run(args):
    return generate_rack(*args)


def rack_results(plan: Plan, racks, jobs: int = 1):
    """generate_rack of each rack in `racks`, `jobs` worker processes at a time, as they finish."""
    tasks = [(plan, rack) for rack in racks]
    if jobs <= 1:
        yield from map(_run, tasks)
        return
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)))
    try:
        yield from pool.imap_unordered(_run, tasks)
    finally:
        pool.terminate()


def run_shard(plan: Plan, racks: list[int], jobs: int = 1) -> list[tuple]:
    """One Slurm task's share of a site: its racks' results, for assemble() to join."""
    return list(rack_results(plan, racks, jobs))


def baselines(plan: Plan) -> dict[str, np.ndarray]:
    """Baseline name -> (nodes,) constant watts of each node."""
    layout = plan.layout
    per_job = {job: baseline_watts(_generator(path).ckpt, plan.non_gpu_w) for job, path in plan.checkpoints.items()}
    return {m.name: np.array([per_job[plan.rack_jobs[n // layout.nodes_per_rack]][m.name]
                              for n in range(layout.n_nodes)]) for m in site_baselines()}


def assemble(plan: Plan, results, progress: bool = True) -> SiteResult:
    """The site from every rack's generate_rack result, in any order."""
    layout = plan.layout
    racks = np.zeros((layout.n_racks, plan.n_bins))
    node_peaks = np.zeros((layout.n_nodes, len(RESOLUTIONS_S)))
    node_metrics: list[dict] = [None] * layout.n_nodes
    served = np.zeros((layout.n_nodes, 3))
    above = np.zeros(layout.n_nodes, dtype=np.int64)
    traffic: list[dict] = [None] * layout.n_nodes
    seen = set()
    with tqdm(total=layout.n_racks, desc="racks", unit="rack", disable=not progress) as bar:
        for rack, rack_watts, peaks, stats, counts, bins_above, checks in results:
            racks[rack] = rack_watts
            seen.add(rack)
            for i, node in enumerate(layout.nodes_of_rack(rack)):
                node_peaks[node], node_metrics[node], served[node] = peaks[i], stats[i], counts[i]
                above[node] = bins_above[i]
                traffic[node] = checks[i]
            bar.update()
    if len(seen) != layout.n_racks:
        raise RuntimeError(f"{layout.n_racks - len(seen)} racks have no result")
    return SiteResult(racks, node_peaks, node_metrics, served, above, baselines(plan), traffic)


def prepare(plan: Plan) -> None:
    """Load every configuration here first: the GRU kernel is built (or found wanting) once,
    before any worker or task needs it."""
    for path in plan.checkpoints.values():
        _generator(path)


def run_site(plan: Plan, jobs: int = 1, progress: bool = True) -> SiteResult:
    """Every rack, `jobs` worker processes at a time; the same numbers whatever `jobs` is."""
    prepare(plan)
    return assemble(plan, rack_results(plan, range(plan.layout.n_racks), jobs), progress)


def shards(plan: Plan, racks_per_task: int) -> list[tuple[Plan, list[int]]]:
    """The site cut into tasks of `racks_per_task` racks, each with a plan that carries only its
    own nodes' requests (what a task is sent is pickled to the shared file system)."""
    layout, out = plan.layout, []
    for first in range(0, layout.n_racks, racks_per_task):
        racks = list(range(first, min(first + racks_per_task, layout.n_racks)))
        own = {n for r in racks for n in layout.nodes_of_rack(r)}
        requests = None if plan.node_requests is None else \
            [r if n in own else None for n, r in enumerate(plan.node_requests)]
        out.append((replace(plan, node_requests=requests), racks))
    return out


def run_site_on_slurm(plan: Plan, slurm: SlurmSettings, racks_per_task: int, folder: Path,
                      progress: bool = True) -> SiteResult:
    """The site as one Slurm job array: each task generates its racks (with as many worker
    processes as it has CPUs) and returns them; the roll-up happens here as tasks end."""
    prepare(plan)
    tasks = [(shard_plan, racks, slurm.cpus_per_job) for shard_plan, racks in shards(plan, racks_per_task)]
    results = array_results(run_shard, tasks, folder, slurm)
    return assemble(plan, (rack for _, shard in results for rack in shard), progress)


def rows_of(plan: Plan, racks: np.ndarray) -> np.ndarray:
    return racks.reshape(plan.layout.rows, plan.layout.racks_per_row, -1).sum(axis=1)


def _mean_of(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}


def _worst_of(stats: list[dict[str, float]]) -> dict[str, float]:
    return {k: worst([s[k] for s in stats], k) for k in stats[0]}


def site_metrics(plan: Plan, result: SiteResult) -> list[list]:
    """Rows of (method, level, resolution_s, metric, value). Node, rack and row values are the
    mean over the units of that level, and levels worst_rack and worst_row the worst rack's and
    row's (rollup.worst); site values are of the total (IT x PUE) watts."""
    layout = plan.layout
    out = []
    it = result.racks.sum(axis=0)
    rows = rows_of(plan, result.racks)
    per_res = {level: at_resolutions(series, plan.bin_s) for level, series in
               (("racks", result.racks), ("rows", rows), ("site", it * plan.pue))}
    nodes_per_row = layout.racks_per_row * layout.nodes_per_rack
    for j, resolution in enumerate(RESOLUTIONS_S):
        if resolution not in per_res["site"]:
            continue                  # finer than the bins, or not a whole number of them: no rows
        node_peaks = result.node_peaks[:, j]
        units = {
            "rack": [profile_metrics(w) | {"diversity_factor": diversity_factor(
                w.max(), node_peaks[list(layout.nodes_of_rack(r))])}
                for r, w in enumerate(per_res["racks"][resolution])],
            "row": [profile_metrics(w) | {"diversity_factor": diversity_factor(
                w.max(), node_peaks[r * nodes_per_row:(r + 1) * nodes_per_row])}
                for r, w in enumerate(per_res["rows"][resolution])],
        }
        levels = {
            "node": _mean_of([m[resolution] for m in result.node_metrics]) | {"diversity_factor": 1.0},
            "rack": _mean_of(units["rack"]), "row": _mean_of(units["row"]),
            "site": profile_metrics(per_res["site"][resolution])
            | {"diversity_factor": diversity_factor(per_res["site"][resolution].max() / plan.pue, node_peaks)},
        } | {WORST_LEVELS[level]: _worst_of(units[level]) for level in WORST_LEVELS}
        for level in (*LEVELS, *WORST_LEVELS.values()):
            out += [["ours", level, resolution, m, levels[level][m]] for m in METRICS]
    for name, node_watts in result.constants.items():
        rack_w = node_watts.reshape(layout.n_racks, layout.nodes_per_rack).sum(axis=1)
        row_w = rack_w.reshape(layout.rows, layout.racks_per_row).sum(axis=1)
        constant = {"node": node_watts, "rack": rack_w, "row": row_w,
                    "site": np.array([node_watts.sum() * plan.pue])}
        for resolution in per_res["site"]:
            # a constant's profile is the same for any length from 2 on; ours with one value at this
            # resolution has no ramps, and neither has the constant
            n_values = min(len(per_res["site"][resolution]), 2)
            for level in (*LEVELS, *WORST_LEVELS.values()):
                # a constant load: its peak is its average, it never ramps, and every unit peaks at
                # once (diversity factor 1)
                units = [profile_metrics(np.full(n_values, w)) for w in constant[level.removeprefix("worst_")]]
                stats = _worst_of(units) if level.startswith("worst_") else _mean_of(units)
                out += [[name, level, resolution, m, stats.get(m, 1.0)] for m in METRICS]
    return out


def energy_report(plan: Plan, result: SiteResult) -> dict[str, dict[str, float]]:
    """Per method (ours and the site baselines), the servers' (IT) energy per request served and
    per output token, in joules, over the period (the warm-up not counted): what the ML.ENERGY
    leaderboard reports per GPU, here per server with its non-GPU watts and without the PUE."""
    seconds = plan.n_bins * plan.bin_s
    requests, _, output_tokens = result.requests.sum(axis=0)
    average = {"ours": float(result.racks.sum(axis=0).mean())} | \
        {name: float(w.sum()) for name, w in result.constants.items()}
    return {name: {"j_per_request": energy_per(w, seconds, requests),
                   "j_per_output_token": energy_per(w, seconds, output_tokens)} for name, w in average.items()}


def nameplate_report(plan: Plan, result: SiteResult) -> dict:
    """How far the site and its servers go past nameplate (model/nameplate.py): the site's
    share of bins above its nameplate sizing (every node at TP x GPU nameplate + non-GPU watts,
    times PUE) and its peaks at 0.25 s, 1 s and 1 min, and the servers' share of bins above
    their own TP x nameplate."""
    site = above_nameplate([result.racks.sum(axis=0) * plan.pue], plan.bin_s, result.constants["tdp"].sum() * plan.pue)
    return site | {"servers_share_above_nameplate": float(result.bins_above_nameplate.sum())
                   / (plan.layout.n_nodes * plan.n_bins)}
