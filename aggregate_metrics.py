"""Reduce the jobs' metrics files to per-model statistics and the paper's LaTeX table.

    python3 aggregate_metrics.py
    python3 aggregate_metrics.py --metrics_dir demo/training_results/metrics \\
        --out demo/training_results/table_summary.tex --csv_output demo/training_results/model_statistics.csv
    python3 aggregate_metrics.py --plots           # also the figures, under training_results/plots/

Exit status: 0 done, 2 no metrics file or a damaged one (named on stderr).
"""
from __future__ import annotations

from pathlib import Path

from model import config
from model.grid import add_grid_flag, load_grid
from model.settings import add_deprecated_flag
from model.errors import ArgumentParser, EXIT_OK, run_cli


def main() -> int:
    parser = ArgumentParser(__doc__)
    add_grid_flag(parser)
    parser.add_argument("--metrics_dir", default=str(config.RESULTS_DIR / config.METRICS_SUBDIR),
                        help=f"the jobs' metrics folder (default: {config.RESULTS_DIR / config.METRICS_SUBDIR})")
    parser.add_argument("--out", dest="output", default=None,
                        help=f"LaTeX table to write (default: beside the metrics folder, {config.TABLE_FILE}); "
                             f"the generation table and statistics go beside it")
    add_deprecated_flag(parser, "--output", "--out", "output")
    parser.add_argument("--csv_output", default=None,
                        help=f"per-model statistics CSV (default: beside the metrics folder, {config.STATISTICS_FILE})")
    parser.add_argument("--allow_mixed_settings", action="store_true",
                        help="pool jobs trained with different settings (each difference is noted)")
    parser.add_argument("--plots", action="store_true",
                        help=f"also write the figures (python -m model.plots) under "
                             f"<metrics_dir>/../{config.PLOTS_SUBDIR}/")
    args = parser.parse_args()
    grid = load_grid(args.grid)
    from model.aggregate import aggregate      # pandas and the figures load after the flags are read
    from model.plots import write_plots
    results_dir = Path(args.metrics_dir).parent     # outputs sit beside what they were made from
    aggregate(grid, args.metrics_dir, args.output or results_dir / config.TABLE_FILE,
              args.csv_output or results_dir / config.STATISTICS_FILE, print_table=True,
              allow_mixed_settings=args.allow_mixed_settings)
    if args.plots:
        write_plots(grid, Path(args.metrics_dir).resolve().parent)
    return EXIT_OK


if __name__ == "__main__":
    run_cli(main, "aggregate_metrics.py")
