"""The README's calibration comparison (issue 24, item 10): every job trained with
`--calibration none` and `--calibration temperature`, side by side, one job at a time.

    python3 docs/calibration_study.py --out /tmp/study --folds 0 1 2 3 4 --seeds 0 1 2 \\
        --cell DATA.npz qwen3-8b a100 1 --grid GRID.toml          # leave one trace out per fold
    python3 docs/calibration_study.py --out /tmp/study-demo --seeds 0 --demo_dir DEMO   # the demo grid

Runs `python -m model.train_entry` per (cell, fold, seed, calibration) with OMP_NUM_THREADS=1,
reads each job's metrics and generation CSVs, and prints per fold the means over seeds: F1,
ECE (and the same classifier's ECE before its temperature), the temperature, and generation
fidelity of ours, the mean baseline and measured_features (NRMSE, energy error, KS, ACF R^2).
A study script, not part of the pipeline: it only calls the job's command line.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CALIBRATIONS = ("none", "temperature")
METHODS = ("ours", "mean", "measured_features")


def run_one(out: Path, cell: tuple, fold: str | None, seed: int, calibration: str, args) -> dict:
    data_file, model, hardware, tp = cell
    folder = out / f"{Path(data_file).stem}_tp{tp}_fold{fold or 'seeded'}_seed{seed}_{calibration}"
    argv = [sys.executable, "-m", "model.train_entry", "--data_file", data_file, "--model", model,
            "--hardware_accelerator", hardware, "--tp", str(tp), "--num_epochs", str(args.epochs),
            "--lr", str(args.lr), "--seed", str(seed), "--calibration", calibration, "--no_wandb",
            "--no_progress", "--output_dir", str(folder)]
    if fold is not None:
        argv += ["--val_traces", fold]
    argv += ["--grid", args.grid] if args.grid else []
    if not any(folder.glob("metrics/*_metrics.csv")):
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    metrics = pd.read_csv(next(folder.glob("metrics/*_metrics.csv"))).set_index("metric")["value"]
    generation = pd.read_csv(next(folder.glob("metrics/*_generation.csv"))).set_index("method")
    row = {"cell": f"{model}_{hardware}_tp{tp}", "fold": fold or "seeded", "seed": seed,
           "calibration": calibration, **{k: metrics[k] for k in
                                          ("val_f1", "ece", "ece_uncalibrated", "temperature")}}
    for method in METHODS:
        for column in ("nrmse", "energy_error_pct", "ks", "acf_r2"):
            row[f"{method}_{column}"] = generation.loc[method, column]
    return row


def demo_cells(demo_dir: str) -> list[tuple]:
    sys.path.insert(0, str(ROOT))
    from model.grid import grid          # the built-in 16 jobs
    return [(str(c.data_file(demo_dir)), c.model, c.hardware, c.tp) for c in grid()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for every job's results (reused when present)")
    parser.add_argument("--cell", nargs=4, metavar=("DATA", "MODEL", "HARDWARE", "TP"), action="append",
                        default=[], help="a job to train (repeatable)")
    parser.add_argument("--demo_dir", help="train every job of the built-in grid on this demo data folder")
    parser.add_argument("--folds", nargs="*", default=[None], help="--val_traces of each fold (default: seeded split)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--grid")
    parser.add_argument("--csv", help="also write every job's row here")
    args = parser.parse_args()
    cells = [tuple(c) for c in args.cell] + (demo_cells(args.demo_dir) if args.demo_dir else [])
    rows = [run_one(Path(args.out), cell, fold, seed, calibration, args)
            for cell in cells for fold in args.folds for seed in args.seeds for calibration in CALIBRATIONS]
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    numbers = [c for c in frame.columns if c not in ("cell", "fold", "seed", "calibration")]
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 40)
    by_fold = frame.groupby(["fold", "calibration"])[numbers].mean()
    print(by_fold.round(4).to_string())
    print()
    print("mean over folds, cells and seeds:")
    print(frame.groupby("calibration")[numbers].mean().round(4).to_string())


if __name__ == "__main__":
    main()
