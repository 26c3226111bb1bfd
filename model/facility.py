"""A site's power: every server generated, rolled up into racks, rows and the facility, sized.

    python -m model.facility --config llama-3-70b_h100_tp4 --rate_per_node 0.5 --duration 86400 --jobs 2
    python -m model.facility --config A:0.5 --config B:0.5 --requests azure_conv.csv --time_scale 0.5
    python -m model.facility --config ... --rate_per_node 0.5 --duration 86400 --diurnal hours.csv \\
        --row_limit_kw 600

Layout --rows x --racks_per_row x --nodes_per_rack (default 10 x 6 x 4); each rack runs one
configuration (a job whose checkpoint is in --results_dir), by --config shares, placed with the
seed. Traffic: --requests FILE for the whole site (each request to a node chosen at random with
the seed; arrivals times --time_scale) or --rate_per_node R --duration S (Poisson per node,
optionally shaped by --diurnal FILE of hour,multiplier). The period is rounded up to whole
15-minute windows. Node = GPU + --non_gpu_w; site total = IT x --pue.
Writes to --out (default facility/): site_power.csv (1 s) and site_power_15min.csv,
racks_1s.npz, facility_metrics.csv (method,level,resolution_s,metric,value), sizing_table.tex,
manifest.json, figures, and with --row_limit_kw oversubscription.csv.
Exit status: 0 done, 2 bad input (one line; nothing written).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from model import config
from model.checkpoint import load_checkpoint
from model.errors import ArgumentParser, InputError, run_cli
from model.generation.generator import SAMPLINGS
from model.generation.requests_file import read_requests
from model.outputs import file_sha256, write_json, write_text
from model.provenance import environment, git_state
from model.sites import report
from model.sites.layout import Layout, assign_configs, parse_mix, read_diurnal, split_requests
from model.sites.site import Plan, run_site, site_metrics

QUARTER_S = 900.0


def parse_args(argv=None):
    parser = ArgumentParser(__doc__)
    parser.add_argument("--rows", type=int, default=10, help="rows of racks")
    parser.add_argument("--racks_per_row", type=int, default=6, help="racks in a row")
    parser.add_argument("--nodes_per_rack", type=int, default=4, help="servers in a rack")
    parser.add_argument("--config", action="append", default=[], metavar="JOB[:SHARE]",
                        help="the configuration of the nodes, a job name (repeat with shares for a mix)")
    parser.add_argument("--results_dir", default=str(config.RESULTS_DIR), help="where the jobs' checkpoints are")
    parser.add_argument("--requests", default=None, help="the site's requests (CSV, as model.generate reads)")
    parser.add_argument("--time_scale", type=float, default=1.0, help="multiply the requests' arrival times")
    parser.add_argument("--rate_per_node", type=float, default=None, help="Poisson requests per second per node")
    parser.add_argument("--duration", type=float, default=None, help="seconds (with --rate_per_node)")
    parser.add_argument("--diurnal", default=None, help="CSV hour,multiplier shaping --rate_per_node")
    parser.add_argument("--non_gpu_w", type=float, default=1000.0, help="watts of each server beyond its GPUs")
    parser.add_argument("--pue", type=float, default=1.3, help="power usage effectiveness of the site")
    parser.add_argument("--seed", type=int, default=0, help="base seed (node n uses seed + n)")
    parser.add_argument("--sampling", choices=SAMPLINGS, default=config.GENERATION_SAMPLING,
                        help="how states are drawn in time")
    parser.add_argument("--row_limit_kw", type=float, default=None, help="row breaker limit: how many racks fit")
    parser.add_argument("--draws", type=int, default=200, help="random rack sets per row size (with --row_limit_kw)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--save_nodes", action="store_true", help="also keep every node's trace (out/nodes/)")
    parser.add_argument("--out", default="facility", help="output folder")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_numbers(args) -> None:
    checks = [(args.non_gpu_w >= 0 and math.isfinite(args.non_gpu_w), f"--non_gpu_w must be >= 0, got {args.non_gpu_w}"),
              (args.pue >= 1 and math.isfinite(args.pue), f"--pue must be at least 1, got {args.pue}"),
              (args.time_scale > 0 and math.isfinite(args.time_scale), f"--time_scale must be positive, got {args.time_scale}"),
              (args.jobs >= 1, f"--jobs must be at least 1, got {args.jobs}"),
              (args.draws >= 1, f"--draws must be at least 1, got {args.draws}"),
              (0 <= args.seed < 2**31, f"--seed must lie in 0..2**31-1, got {args.seed}"),
              (args.row_limit_kw is None or args.row_limit_kw > 0, f"--row_limit_kw must be positive, got {args.row_limit_kw}")]
    for ok, message in checks:
        if not ok:
            raise InputError(message)
    if (args.requests is None) == (args.rate_per_node is None):
        raise InputError("give the traffic as --requests FILE or as --rate_per_node R --duration S (one of them)")
    if args.rate_per_node is not None and not (args.rate_per_node > 0 and math.isfinite(args.rate_per_node)):
        raise InputError(f"--rate_per_node must be positive, got {args.rate_per_node}")
    if args.rate_per_node is not None and args.duration is None:
        raise InputError("--rate_per_node needs --duration (seconds)")
    if args.duration is not None and not (args.duration > 0 and math.isfinite(args.duration)):
        raise InputError(f"--duration must be a positive number of seconds, got {args.duration}")


def main() -> int:
    return build_site(parse_args())


def build_site(args) -> int:
    check_numbers(args)
    layout = Layout(args.rows, args.racks_per_row, args.nodes_per_rack)
    mix = parse_mix(args.config)
    checkpoints = {job: config.checkpoint_path(args.results_dir, job) for job in mix}
    ckpts = {job: load_checkpoint(path) for job, path in checkpoints.items()}
    bins = {float(c.configuration["bin_s"]) for c in ckpts.values()}
    if len(bins) > 1:
        raise InputError(f"--config: the configurations have different bin widths ({sorted(bins)} s)")
    bin_s = bins.pop()
    rack_jobs = assign_configs(layout, mix, args.seed)

    node_requests, total = None, None
    if args.requests:
        requests, notes = read_requests(args.requests)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        requests.arrival_s = requests.arrival_s * args.time_scale
        duration = args.duration or float(requests.arrival_s[-1]) + 60.0
        node_requests = split_requests(requests, layout.n_nodes, args.seed)
        total = np.array([len(requests), requests.input_tokens.sum(), requests.output_tokens.sum()])
    else:
        duration = args.duration
    diurnal = read_diurnal(args.diurnal) if args.diurnal else None
    n_bins = int(math.ceil(duration / QUARTER_S)) * int(round(QUARTER_S / bin_s))   # whole 15-min windows
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")

    plan = Plan(layout, rack_jobs, checkpoints, n_bins, bin_s, args.non_gpu_w, args.pue, args.seed,
                args.sampling, node_requests, args.rate_per_node, diurnal,
                out / "nodes" if args.save_nodes else None)
    print(f"{layout.n_nodes} nodes in {layout.n_racks} racks, {n_bins * bin_s / 3600:.2f} h at {bin_s} s, "
          f"{args.jobs} worker(s) ...", flush=True)
    started = time.perf_counter()
    result = run_site(plan, jobs=args.jobs, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    if total is not None and not np.allclose(result.requests.sum(axis=0), total):
        raise RuntimeError(f"the split lost requests or tokens: {result.requests.sum(axis=0)} of {total}")

    metrics = pd.DataFrame(site_metrics(plan, result), columns=["method", "level", "resolution_s", "metric", "value"])
    it_w = result.racks.sum(axis=0)
    out.mkdir(parents=True, exist_ok=True)
    report.write_site_power(out, it_w, args.pue, bin_s)
    report.write_racks(out, result.racks, rack_jobs, bin_s)
    report.write_frame(out / "facility_metrics.csv", metrics)
    table = report.sizing(metrics)
    write_text(out / "sizing_table.tex", report.sizing_table(
        table, f"Site of {layout.n_nodes} servers ({layout.rows} rows x {layout.racks_per_row} racks x "
               f"{layout.nodes_per_rack}), {n_bins * bin_s / 3600:.1f} h, PUE {args.pue:g}: sized by nameplate "
               "power (TDP), by mean power and by generated traces (ours)."))
    curve, largest = None, None
    if args.row_limit_kw:
        rack_constants = {name: w.reshape(layout.n_racks, -1).sum(axis=1) for name, w in result.constants.items()}
        per_second = report.window_means(result.racks, int(round(1.0 / bin_s)))
        curve, largest = report.oversubscription(per_second, rack_constants, args.row_limit_kw * 1e3,
                                                 args.draws, args.seed)
        report.write_frame(out / "oversubscription.csv", curve)
    constant_totals = {f"{name} ({w.sum() * args.pue / 1e6:.2f} MW)": w.sum() * args.pue
                       for name, w in result.constants.items()}
    report.write_figures(out, it_w, args.pue, bin_s, result.racks, constant_totals, curve,
                         args.row_limit_kw * 1e3 if args.row_limit_kw else None)
    manifest = {
        "inputs": {job: {"checkpoint": str(path), "sha256": file_sha256(path)} for job, path in checkpoints.items()}
        | ({"requests": {"file": args.requests, "sha256": file_sha256(args.requests)}} if args.requests else {})
        | ({"diurnal": {"file": args.diurnal, "sha256": file_sha256(args.diurnal)}} if args.diurnal else {}),
        "layout": {"rows": layout.rows, "racks_per_row": layout.racks_per_row,
                   "nodes_per_rack": layout.nodes_per_rack, "rack_jobs": rack_jobs},
        "traffic": {"time_scale": args.time_scale} if args.requests else {"rate_per_node": args.rate_per_node},
        "requests_served": result.requests.sum(axis=0).tolist(), "seed": args.seed, "node_seeds": "seed + node id",
        "sampling": args.sampling, "bin_s": bin_s, "bins": n_bins, "non_gpu_w": args.non_gpu_w, "pue": args.pue,
        "row_limit_kw": args.row_limit_kw, "largest_row_racks": largest, "git": git_state(),
        "versions": {k: v for k, v in environment().items() if k in ("python", "torch", "numpy", "scikit-learn")},
    }
    write_json(out / "manifest.json", manifest)

    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    if largest:
        print(f"racks per {args.row_limit_kw:g} kW row: " + ", ".join(f"{k} {v}" for k, v in largest.items()))
    print(f"{out}/: site power, metrics, sizing table, figures ({seconds:.0f} s for {layout.n_nodes} nodes)")
    return 0


if __name__ == "__main__":
    run_cli(main, "facility")
