"""Train the whole grid: one `python -m model.train_entry` job per configuration.

    python3 run_all_training.py --demo                 # whole pipeline on built-in demo data
    python3 run_all_training.py --dry_run              # show the 16 commands, run nothing
    python3 run_all_training.py --data_dir model/training_data --jobs 2
    python3 run_all_training.py --models llama-3-8b --hardware h100 --num_epochs 50
    python3 run_all_training.py --launcher slurm --slurm_partition gpu --slurm_gpus_per_job 1 --dry_run
    python3 run_all_training.py --launcher slurm --no_wait ... ; later: run_all_training.py --collect

Writes training_results/ (or --output_dir): jobs_summary.json, metrics/, checkpoints/, synthetic/,
logs/; with --demo also the table and plots/.
Exit status: 0 every job succeeded or was reused (or was submitted, with --no_wait), 1 a job
failed, diverged or had no data (--collect: or was interrupted), 2 bad usage (or another launcher
holds --output_dir), 3 (--collect) some Slurm tasks are still queued or running,
130/143 interrupted by SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from model import config
from model.errors import ArgumentParser, EXIT_FAILED, EXIT_OK, InputError, run_cli
from model.grid import Grid, grid_of_argv
from model.settings import add_job_flags, settings_from_args
from model.slurm_settings import add_slurm_flags, slurm_settings

EXIT_STILL_RUNNING = 3


def parse_args(grid: Grid) -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--data_dir", default=None, help=f"folder of the .npz files (default {config.DATA_DIR.relative_to(config.PROJECT_ROOT)})")
    parser.add_argument("--output_dir", default=None, help=f"results folder (default {config.RESULTS_DIR})")
    parser.add_argument("--models", nargs="+", default=None, help=f"subset of: {' '.join(grid.model_keys)}")
    parser.add_argument("--hardware", nargs="+", default=None, help=f"subset of: {' '.join(grid.hardware)}")
    job_flags = parser.add_argument_group(
        "every job's settings (the grid fields of JobSettings in model/settings.py); --demo trains "
        f"{config.DEMO_NUM_EPOCHS} epochs at lr {config.DEMO_LR} unless these are given")
    add_job_flags(job_flags, launcher=True, defaults={"lr": None, "num_epochs": None})
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs run at once (default 1; all cores with --demo)")
    parser.add_argument("--skip_existing", action="store_true",
                        help="reuse finished jobs with the same settings; resume partial ones")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and write nothing")
    parser.add_argument("--demo", action="store_true",
                        help="generate demo data, train the grid briefly, print the table")
    slurm = add_slurm_flags(parser, "configuration")
    slurm.add_argument("--no_wait", action="store_true", help="return after submitting; see --collect")
    slurm.add_argument("--collect", action="store_true",
                       help="update jobs_summary.json in --output_dir from a --no_wait submission's tasks")
    args = parser.parse_args()
    args.models = [m for item in args.models or [] for m in item.split(",") if m] or None
    args.hardware = [h for item in args.hardware or [] for h in item.split(",") if h] or None
    return args


def prebuild_kernel(template) -> None:
    """Build the fused kernel here, once, with a word about it, rather than in every job at
    once while the launcher says nothing."""
    import torch
    from model.classifiers.fused_gru import FusedGRUUnavailable, extension_is_built, load_extension
    from model.classifiers.gru import intended_gru_impl
    device = template.device if template.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if intended_gru_impl(template.gru_impl, torch.device(device).type) == "fused" and not extension_is_built():
        print("building the fused GRU kernel once (about a minute; later runs reuse it) ...", flush=True)
        try:
            load_extension(verbose=False)
        except FusedGRUUnavailable:
            pass             # each job says why and falls back to nn.GRU


def demo_site(grid: Grid, output_dir: Path, jobs: int) -> None:
    """The demo's last step: a small site (2 rows x 2 racks x 4 servers, one hour) of one
    demo configuration, sized by its generated traces against TDP and mean power: the
    built-in grid's llama-3-70b_h100_tp8, or with another grid its last configuration trained."""
    from model.facility import build_site
    from model.facility import parse_args as facility_args
    trained = [c.job_name for c in grid.cells() if config.checkpoint_path(output_dir, c.job_name).exists()]
    if not trained:
        return
    job = "llama-3-70b_h100_tp8" if "llama-3-70b_h100_tp8" in trained else trained[-1]
    print(f"\na small site of {job} servers, one hour of Poisson traffic at 0.5 requests/s each:")
    build_site(facility_args(["--config", job, "--results_dir", str(output_dir), "--rows", "2",
                              "--racks_per_row", "2", "--nodes_per_rack", "4", "--rate_per_node", "0.5",
                              "--duration", "3600", "--row_limit_kw", "40", "--jobs", str(jobs),
                              "--output_dir", str(output_dir / "facility"), "--no_progress",
                              "--overwrite"]))     # the demo's own folder: a second demo replaces it


def next_steps(grid: Grid, output_dir: Path) -> str:
    aggregate_command = ["python3", "aggregate_metrics.py", *grid.argv(),
                         "--metrics_dir", str(output_dir / config.METRICS_SUBDIR), "--plots"]
    lines = [f"\nresults: {output_dir}/", f"next:    {shlex.join(aggregate_command)}"]
    offline = sorted((output_dir / "wandb").glob("offline-run-*")) if (output_dir / "wandb").is_dir() else []
    if offline:
        lines.append(f"W&B:     {len(offline)} offline run(s); upload with: wandb sync {output_dir / 'wandb'}/offline-run-*")
    return "\n".join(lines)


def collect_submitted(output_dir: Path) -> int:
    from model.slurm import collect
    records = collect(output_dir)
    statuses = [r.status for r in records]
    print(f"summary: {output_dir / config.SUMMARY_FILE}")
    if any(s in ("submitted", "running") for s in statuses):
        return EXIT_STILL_RUNNING
    unfinished = {s: statuses.count(s) for s in dict.fromkeys(statuses)
                  if s in ("failed", "missing_data", "interrupted", "diverged")}
    if unfinished:
        print(f"{sum(unfinished.values())} of {len(statuses)} jobs did not finish: "
              + ", ".join(f"{n} {s}" for s, n in unfinished.items()), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main() -> int:
    grid = grid_of_argv(sys.argv[1:])      # the flags' help lists the grid's models and hardware
    args = parse_args(grid)
    # the heavy modules (torch, pandas, submitit) load after the flags are read, so that --help
    # and usage errors are instant
    from model.aggregate import aggregate
    from model.demo_data import write_demo_files
    from model.launcher import LaunchSettings, lock_output_dir, run_grid, train_command
    from model.plots import write_plots
    from model.slurm import submission_preview, submit_grid
    if args.collect:
        return collect_submitted(Path(args.output_dir or config.RESULTS_DIR).absolute())
    configs = grid.cells(args.models, args.hardware)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    data_dir = Path(args.data_dir or (config.DEMO_DATA_DIR if args.demo else config.DATA_DIR))
    output_dir = Path(args.output_dir or (config.DEMO_RESULTS_DIR if args.demo else config.RESULTS_DIR)).absolute()
    num_epochs = args.num_epochs or (config.DEMO_NUM_EPOCHS if args.demo else config.NUM_EPOCHS)
    if args.num_epochs is not None and args.num_epochs < 1:
        raise InputError(f"--num_epochs must be at least 1, got {args.num_epochs}")
    lr = args.lr if args.lr is not None else (config.DEMO_LR if args.demo else config.LR)
    jobs = args.jobs or ((os.cpu_count() or 1) if args.demo else 1)
    template = settings_from_args(args, data_file="", model=grid.model_keys[0], hardware=grid.hardware[0], tp=1,
                                  lr=lr, num_epochs=num_epochs)
    template.validate()
    launch = LaunchSettings(data_dir=data_dir.absolute(), output_dir=output_dir, job=template, jobs=jobs,
                            skip_existing=args.skip_existing)
    slurm = slurm_settings(args)
    if args.launcher != "slurm" and args.no_wait:
        raise InputError("--no_wait is for --launcher slurm")

    if args.dry_run:
        if args.launcher == "slurm":
            print(f"# one Slurm job array of {len(configs)} tasks, submitted through submitit as:")
            print(submission_preview(output_dir, slurm, len(configs)).rstrip())
            print("# task i runs command i:")
        for missing in dict.fromkeys(c.data_file(launch.data_dir) for c in configs):
            if not missing.exists():     # one warning per file, before the commands
                print(f"WARNING: Data file not found: {missing}", file=sys.stderr)
        for cfg in configs:
            print(shlex.join(train_command(cfg, launch)))
        return EXIT_OK

    started = time.perf_counter()
    if args.demo:
        missing = [c for c in configs if not c.data_file(data_dir).exists()]
        if missing:
            print(f"writing demo data to {data_dir}/ ...", flush=True)
            write_demo_files(grid, data_dir, seed=0, scale="demo", models=args.models, hardware=args.hardware)
        print(f"training {len(configs)} jobs, {num_epochs} epochs each at lr {lr}, {jobs} at a time, into {output_dir}/",
              flush=True)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{output_dir}: cannot create the output folder: {err.strerror}") from None
    if not os.access(output_dir, os.W_OK):
        raise InputError(f"{output_dir}: the output folder is not writable")
    lock_output_dir(output_dir)

    if args.launcher == "slurm":
        records, stopped_by = submit_grid(configs, launch, slurm, wait=not args.no_wait)
    else:
        prebuild_kernel(template)
        records, stopped_by = run_grid(configs, launch)
    counts = {s: sum(r.status == s for r in records) for s in dict.fromkeys(r.status for r in records)}
    print(f"\n{len(records)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" ({time.perf_counter() - started:.0f} s)")
    print(f"summary: {output_dir / config.SUMMARY_FILE}")
    if stopped_by is not None:
        print("interrupted; rerun the same command with --skip_existing to continue where it stopped",
              file=sys.stderr)
        return 128 + stopped_by
    if counts.get("missing_data") == len(records):
        print(f"\nNo data file was found in {data_dir} (expected names like "
              f"{configs[0].data_file_name}).\n"
              f"To try the pipeline on generated demo data: python3 run_all_training.py --demo")
    # a job stopped by a signal from outside (the launcher itself was not) has no result either
    failed = sum(counts.get(s, 0) for s in ("failed", "missing_data", "diverged", "interrupted"))
    if not args.demo and counts.get("succeeded", 0):
        print(next_steps(grid, output_dir))
    if args.demo and counts.get("succeeded", 0) + counts.get("skipped_existing", 0) > 0:
        print()
        aggregate(grid, output_dir / config.METRICS_SUBDIR, output_dir / config.TABLE_FILE,
                  output_dir / config.STATISTICS_FILE, print_table=True)
        write_plots(grid, output_dir)
        demo_site(grid, output_dir, jobs)
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    try:
        run_cli(main, "run_all_training.py")
    except KeyboardInterrupt:     # Ctrl-C outside the grid's own handling (planning, the demo's table)
        print("run_all_training.py: interrupted", file=sys.stderr)
        sys.exit(130)
