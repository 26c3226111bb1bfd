"""Train one configuration of the grid and write its metrics, losses and checkpoint.

    python -m model.train_entry --data_file model/training_data/vllm-benchmark_llama-3-8b_a100.npz \\
        --model llama-3-8b --tp 1 --hardware_accelerator a100 --num_epochs 5

`--tp -1` trains every TP in the file, one job after the other. Outputs go under
--output_dir (default ./training_results): metrics/{job}_metrics.csv, metrics/{job}_losses.csv,
checkpoints/{job}.pt. Exit status: 0 done, 1 a job failed, 2 bad usage or bad input (nothing
written), 4 the training diverged (loss not finite), 130/143 interrupted by SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from model.errors import ArgumentParser, InputError, run_cli
from model.interrupts import exit_status, interruptible
from model.settings import add_job_flags, settings_from_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    add_job_flags(parser)     # one flag per field of model/settings.py's JobSettings
    return parser.parse_args(argv)


def stage_line(seconds: dict[str, float]) -> str:
    """'12.3 s: data 0.4, training 8.1, ...', a job's wall time split into its stages."""
    return f"{sum(seconds.values()):.1f} s: " + ", ".join(f"{stage} {s:.1f}" for stage, s in seconds.items())


def main() -> int:
    args = parse_args()
    # torch and the rest load after the flags are read: --help and usage errors stay instant
    from model.data import load_power_file
    from model.job import check_output_paths, output_paths, prepare, run_job
    settings = settings_from_args(args)
    settings.validate()
    data = load_power_file(settings.data_file)
    if args.tp == -1:
        tps = data.tp_values
        if args.weights_path and "{job}" not in args.weights_path and len(tps) > 1:
            raise InputError("--weights_path needs '{job}' in it with --tp -1 (one checkpoint per TP)")
    elif args.tp < 1:
        raise InputError(f"--tp must be a positive TP size or -1 for all, got {args.tp}")
    else:
        tps = [args.tp]
    # every TP is checked before any is trained: a bad one must not leave the others half done
    for tp in tps if len(tps) > 1 else []:
        job_settings = replace(settings, tp=tp)
        prepare(job_settings, data)
        check_output_paths(job_settings, output_paths(job_settings))
    for tp in tps:
        if tp not in settings.grid.models_by_key[settings.model].tp_values:
            print(f"note: TP {tp} is not in the grid for {settings.model}; aggregate_metrics.py will not "
                  "tabulate it", file=sys.stderr)
        job_settings = replace(settings, tp=tp)
        print(f"== {job_settings.job_name}: training on {settings.data_file}", flush=True)
        result = run_job(job_settings, data=data)
        m = result.metrics
        print(f"{result.job}: val_f1={m['val_f1']:.3f} autocorr_r2={m['autocorr_r2']:.3f} "
              f"transition_mae={m['transition_mae']:.1f} W ece={m['ece']:.4f} "
              f"energy_error={m['energy_error_pct']:.1f}% ({stage_line(result.seconds)})")
        for kind, path in result.paths.items():
            print(f"  {kind:<10} {path}")
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C: temporary files are removed, wandb is closed; exit 128 + the
    # signal (143 for SIGTERM), as for any killed process
    try:
        with interruptible():
            run_cli(main, "train_entry")
    except KeyboardInterrupt as stop:
        print("train_entry: interrupted", file=sys.stderr)
        sys.exit(exit_status(stop))
