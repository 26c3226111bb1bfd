"""A site built from model.facility's flags: servers generated, rolled up, sized and written.

model/facility.py checks the flags and calls build_site; everything that needs torch, pandas
or matplotlib lives here, so that the command's --help does not load them.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.features import window_means
from model.checkpoint import load_checkpoint
from model.command_settings import FacilitySettings
from model.errors import EXIT_FAILED, InputError, refuse_oversized
from model.generation.generator import Requests
from model.generation.requests_file import read_requests
from model.interrupts import exit_status, interruptible
from model.outputs import file_sha256, locked_directory, staged_folder
from model.provenance import environment, git_state
from model.generation import methods
from model.nameplate import summary_line
from model.sites import html_report, report
from model.sites.layout import Layout, assign_configs, parse_mix, read_diurnal, split_requests
from model.sites.output_folder import (SITE_SUBFOLDERS, check_previous_run, refuse_foreign, remove_files, under,
                                       write_manifest)
from model.sites.site import Plan, energy_report, nameplate_report, run_site, run_site_on_slurm, site_metrics
from model.slurm import SLURM_SUBDIR, TasksFailed

QUARTER_S = 900.0


@dataclass
class SiteInputs:
    """What a site's flags name, read and checked: everything build_site needs before it works."""
    layout: Layout
    mix: dict[str, float]
    checkpoints: dict[str, Path]     # job -> its checkpoint file
    bin_s: float
    n_bins: int                      # whole 15-minute windows
    requests: Requests | None        # the site's request stream, arrivals already time-scaled
    diurnal: np.ndarray | None


def site_inputs(args: FacilitySettings) -> SiteInputs:
    """Read and check what `args` (model.facility's settings, validated) name: the layout, the
    configurations' checkpoints (one bin width), the requests file, the diurnal profile, and that
    the site fits in memory. InputError naming the flag or file, before any work; a scenario
    sweep calls it for every run before the first (model/sites/scenario.py)."""
    layout = Layout(args.rows, args.racks_per_row, args.nodes_per_rack)
    mix = parse_mix(args.config)
    checkpoints = {job: config.checkpoint_path(args.results_dir, job) for job in mix}
    for job, path in checkpoints.items():
        if not path.is_file():
            raise InputError(f"--config {job}: no checkpoint in --results_dir {args.results_dir} ({path}: "
                             "checkpoint not found)")
    ckpts = {job: load_checkpoint(path) for job, path in checkpoints.items()}
    bins = {float(c.configuration["bin_s"]) for c in ckpts.values()}
    if len(bins) > 1:
        raise InputError(f"--config: the configurations have different bin widths ({sorted(bins)} s)")
    bin_s = bins.pop()

    requests = None
    if args.requests:
        requests, notes = read_requests(args.requests)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        requests.arrival_s = requests.arrival_s * args.time_scale
        duration = args.duration or float(requests.arrival_s[-1]) + args.drain_s
    else:
        duration = args.duration
    diurnal = read_diurnal(args.diurnal) if args.diurnal else None
    quarters = math.ceil(duration / QUARTER_S) if math.isfinite(duration) else math.inf
    # before anything is allocated: the racks' watts, their per-second means and the site's, held
    # here at once, and each node's statistics and requests
    refuse_oversized(3.0 * layout.n_racks * quarters * (QUARTER_S / bin_s) * 8 + layout.n_nodes * 4096,
                     f"{layout.n_racks} racks x {quarters * QUARTER_S / bin_s:.3g} bins",
                     "--rows, --racks_per_row, --nodes_per_rack or --duration")
    n_bins = int(quarters) * int(round(QUARTER_S / bin_s))
    return SiteInputs(layout, mix, checkpoints, bin_s, n_bins, requests, diurnal)


def build_site(args: FacilitySettings) -> int:
    """Generate the site of `args` (model.facility's settings, already checked), roll it up,
    size it and write its files; the exit status."""
    inputs = site_inputs(args)
    layout, mix, checkpoints, bin_s, n_bins = inputs.layout, inputs.mix, inputs.checkpoints, inputs.bin_s, inputs.n_bins
    requests, diurnal = inputs.requests, inputs.diurnal
    rack_jobs = assign_configs(layout, mix, args.seed)
    node_requests = None
    if requests is not None:
        node_requests = split_requests(requests, layout.n_nodes, args.seed)
        split = np.sum([[len(r), r.input_tokens.sum(), r.output_tokens.sum()] for r in node_requests], axis=0)
        total = np.array([len(requests), requests.input_tokens.sum(), requests.output_tokens.sum()])
        if not np.allclose(split, total):
            raise RuntimeError(f"the split lost requests or tokens: {split} of {total}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {out}: is a file, not a folder")
    made_out = not out.exists()
    try:
        with locked_directory(out, "--output_dir"):     # two runs on one folder: the last writer would win
            # refused before any work; with --overwrite, what this run writes into as it goes (nodes/,
            # slurm/) is cleared now, the previous results only when the new ones take their place
            previous = check_previous_run(out, args.overwrite, SITE_SUBFOLDERS)
            working = [name for name, used in (("nodes", args.save_nodes), (SLURM_SUBDIR, args.launcher == "slurm"))
                       if used]
            now, later = under(previous, out, working)
            remove_files(out, now)
            return _build(args, layout, checkpoints, bin_s, rack_jobs, node_requests, diurnal,
                          n_bins, out, later)
    finally:
        if made_out:
            try:
                out.rmdir()                # only if nothing is in it: a failed run leaves no folder
            except OSError:
                pass


def _build(args, layout, checkpoints, bin_s, rack_jobs, node_requests, diurnal, n_bins,
           out: Path, previous: list[Path]) -> int:
    plan = Plan(layout, rack_jobs, checkpoints, n_bins, bin_s, args.non_gpu_w, args.pue, args.seed,
                args.sampling, node_requests, args.rate_per_node, diurnal,
                out / "nodes" if args.save_nodes else None, args.warmup_s)
    workers = (f"Slurm tasks of {args.racks_per_task} racks" if args.launcher == "slurm"
               else f"{args.jobs} worker(s)")
    print(f"{layout.n_nodes} nodes in {layout.n_racks} racks, {n_bins * bin_s / 3600:.2f} h at {bin_s} s, "
          f"{workers} ...", flush=True)
    started = time.perf_counter()
    with interruptible():         # SIGTERM as Ctrl-C: stop, write nothing
        try:
            if args.launcher == "slurm":
                result = run_site_on_slurm(plan, args.slurm, args.racks_per_task, out.absolute() / SLURM_SUBDIR,
                                           progress=args.progress)
            else:
                result = run_site(plan, jobs=args.jobs, progress=args.progress)
        except TasksFailed as err:
            print(f"facility: error: {err}; nothing written", file=sys.stderr)
            return EXIT_FAILED
        except KeyboardInterrupt as stop:
            print("facility: interrupted; nothing written", file=sys.stderr)
            return exit_status(stop)
    seconds = time.perf_counter() - started

    checks = site_checks(plan, result, args.strict)      # --strict: exit 2 here, nothing written
    metrics = pd.DataFrame(site_metrics(plan, result), columns=["method", "level", "resolution_s", "metric", "value"])
    it_w = result.racks.sum(axis=0)
    nameplate = nameplate_report(plan, result)
    with staged_folder(out) as staging:      # every file or none: a failure below leaves nothing
        table, row_answers, manifest = _write_results(args, plan, result, metrics, nameplate, it_w, checkpoints,
                                                      layout, rack_jobs, bin_s, n_bins, staging, checks)
        answers = [f"site: {summary_line(nameplate)}"] + (
            [f"racks per {args.row_limit_kw:g} kW row (P{args.risk:g} of random rows' peaks under it): "
             + ", ".join(row_answers)] if row_answers else [])
        html_report.write_site_report(staging, report.sizing_display(table), answers, manifest, metrics)
        write_manifest(staging, manifest)    # last: it lists the files above
        refuse_foreign(out, staging, previous)
        remove_files(out, previous)          # the previous run's results (--overwrite), as these replace them
    with pd.option_context("display.width", 140):
        print(report.sizing_display(table).to_string())
    print(f"site: {summary_line(nameplate)}")
    if row_answers:
        print(f"racks per {args.row_limit_kw:g} kW row (P{args.risk:g} of random rows' peaks under it): "
              + ", ".join(row_answers))
    print(f"{out}/: site power, metrics, sizing table, figures ({seconds:.0f} s for {layout.n_nodes} nodes)")
    return 0


def site_checks(plan, result, strict: bool) -> dict:
    """Per configuration, its nodes' traffic against what its checkpoint trained on and its
    validation scores (model/generation/extrapolation.py), printed as `notice:` and `warning:`
    lines (--strict: the traffic notices are an InputError); for the manifest, `warnings` (every
    line), `extrapolation` (per configuration, the pooled traffic check) and `servers` (per
    configuration, the server settings its training runs record: prefix cache, batch limits)."""
    from model.generation.extrapolation import fidelity_warnings, pooled, report, summarize, traffic_notices
    summaries, notices, warnings, servers = {}, [], [], {}
    for job, path in plan.checkpoints.items():
        ckpt = load_checkpoint(path)
        servers[job] = ckpt.server["settings"]        # what its training runs' vLLM was set to
        nodes = [n for rack, j in enumerate(plan.rack_jobs) if j == job for n in plan.layout.nodes_of_rack(rack)]
        if nodes:
            summaries[job] = summarize(pooled([result.traffic[n] for n in nodes]), ckpt.training_traffic)
            notices += traffic_notices(summaries[job], job)
        warnings += fidelity_warnings(job, ckpt.metrics)
    report(notices, strict)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    return {"warnings": notices + warnings, "extrapolation": summaries, "servers": servers}


def _write_results(args, plan, result, metrics, nameplate, it_w, checkpoints, layout, rack_jobs, bin_s, n_bins, out,
                   checks):
    report.write_site_power(out, it_w, args.pue, bin_s)
    report.write_racks(out, result.racks, rack_jobs, bin_s)
    report.write_frame(out / "facility_metrics.csv", metrics)
    energy = energy_report(plan, result)
    table = report.sizing(metrics, nameplate, energy)
    site = (f"{layout.n_nodes} servers ({layout.rows} row{'s' * (layout.rows != 1)} $\\times$ "
            f"{layout.racks_per_row} rack{'s' * (layout.racks_per_row != 1)} $\\times$ {layout.nodes_per_rack}), "
            f"{n_bins * bin_s / 3600:.1f} h, PUE {args.pue:g}")
    report.write_table(out, "sizing_table", table, report.sizing_table(
        table, f"Site of {site}, sized by nameplate power (TDP, the GPUs' rated power, which they can exceed), "
               "by mean power and by generated traces (ours). Site power includes the PUE; rows, racks and "
               "energy (per request served and per output token) are IT power; ratios, ramps and row and "
               "rack peaks at 1 s; above nameplate: share of bins above the nameplate sizing."))
    curve, largest, at_site_limit, rows = None, None, [], None
    if args.row_limit_kw:
        rack_constants = {name: w.reshape(layout.n_racks, -1).sum(axis=1) for name, w in result.constants.items()}
        per_second = window_means(result.racks, int(round(1.0 / bin_s)))
        curve, largest, at_site_limit = report.oversubscription(per_second, rack_constants, args.row_limit_kw * 1e3,
                                                                args.draws, args.seed, args.risk)
        report.write_frame(out / "oversubscription.csv", curve)
        rows = report.row_sizing(curve, largest, at_site_limit)
        report.write_table(out, "row_sizing", rows, report.display_tex(
            report.row_sizing_display(rows, args.risk),
            f"Racks a {args.row_limit_kw:g} kW row carries, site of {site}: the largest number of distinct "
            f"racks drawn at random ({args.draws} draws) whose P{args.risk:g} row peak (1 s) stays under the "
            "limit, and how the row peaks spread there; $\\geq$: every rack of the site fits.", "tab:site_rows"))
    constant_totals = {f"{methods.label(name)} ({report.readable_power(w.sum() * args.pue)})": w.sum() * args.pue
                       for name, w in result.constants.items()}
    report.write_figures(out, it_w, args.pue, bin_s, result.racks, layout.racks_per_row, constant_totals, curve,
                         args.row_limit_kw * 1e3 if args.row_limit_kw else None, largest, args.risk, at_site_limit)
    manifest = {
        # paths as config.recorded_path keeps them: not this machine's absolute ones where it can
        "inputs": {job: {"checkpoint": config.recorded_path(path), "sha256": file_sha256(path)}
                   for job, path in checkpoints.items()}
        | ({"requests": {"file": config.recorded_path(args.requests), "sha256": file_sha256(args.requests)}}
           if args.requests else {})
        | ({"diurnal": {"file": config.recorded_path(args.diurnal), "sha256": file_sha256(args.diurnal)}}
           if args.diurnal else {}),
        "layout": {"rows": layout.rows, "racks_per_row": layout.racks_per_row,
                   "nodes_per_rack": layout.nodes_per_rack, "rack_jobs": rack_jobs},
        "traffic": {"time_scale": args.time_scale} if args.requests else {"rate_per_node": args.rate_per_node},
        "requests_served": result.requests.sum(axis=0).tolist(), "seed": args.seed, "node_seeds": "seed + node id",
        "sampling": args.sampling, "bin_s": bin_s, "bins": n_bins, "non_gpu_w": args.non_gpu_w, "pue": args.pue,
        "warmup_s": plan.warmup_bins * bin_s,          # simulated before t = 0 and discarded
        "row_limit_kw": args.row_limit_kw, "risk_percentile": args.risk, "largest_row_racks": largest,
        "row_racks_at_site_limit": at_site_limit,     # the whole site fit: the answer is "at least"
        # per method at its answer: the row peaks' p05/p50/p95/max (W) and the share above the limit
        "row_sizing": None if rows is None else {    # through JSON: a missing value (no rack fits) is null
            name: {k: v for k, v in record.items() if k != "method"}
            for name, record in zip(largest, json.loads(rows.to_json(orient="records")))},
        "energy_j": energy,                           # IT energy per request served and per output token
        "nameplate": nameplate,
        **checks,          # "warnings": one line each, "extrapolation": the traffic per configuration
        "git": git_state(),
        "versions": {k: v for k, v in environment().items() if k in ("python", "torch", "numpy", "scikit-learn")},
    }
    answers = [report.row_answer(name, n, at_site_limit) for name, n in largest.items()] if largest else None
    return table, answers, manifest
