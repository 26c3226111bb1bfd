"""One reader of a results folder: the tables and the figures see the same jobs."""
from __future__ import annotations

import json

from model import config
from model.aggregate import collect, collect_generation
from model.plots import read_job_metrics, read_losses, read_val_losses
from model.results import read_results
from model.grid import BUILT_IN

FINISHED, DIVERGED_BEFORE, NAN_LOSS, UNFINISHED = ("llama-3-8b_a100_tp1", "llama-3-8b_a100_tp2",
                                                   "llama-3-8b_h100_tp1", "llama-3-8b_h100_tp2")


def results_folder(root):
    """Four jobs: one finished, one whose last run diverged (its metrics file from an earlier
    one), one with a loss that is not finite, and one that never wrote its metrics file."""
    metrics = root / config.METRICS_SUBDIR
    metrics.mkdir(parents=True)
    for job in (FINISHED, DIVERGED_BEFORE, NAN_LOSS):
        values = {m: "0.5" for m in config.METRIC_ORDER} | {"final_train_loss": "nan" if job == NAN_LOSS else "0.5"}
        (metrics / f"{job}_metrics.csv").write_text("metric,value\n" + "".join(f"{k},{v}\n" for k, v in values.items()))
    for job in (FINISHED, DIVERGED_BEFORE, NAN_LOSS, UNFINISHED):
        (metrics / f"{job}_losses.csv").write_text("epoch,train_loss\n1,0.5\n")
        (metrics / f"{job}_val_losses.csv").write_text("epoch,val_loss\n1,0.6\n")
        (metrics / f"{job}_generation.csv").write_text(
            "method,ks,acf_r2,nrmse,p95_error_pct,p99_error_pct,energy_error_pct\nours,0.1,0.9,0.2,3,4,2\n")
    (root / config.SUMMARY_FILE).write_text(json.dumps([{"job_name": DIVERGED_BEFORE, "status": "diverged"}]))
    return metrics


def test_tables_and_figures_read_the_same_jobs_from_a_results_folder(tmp_path):
    metrics = results_folder(tmp_path)
    assert read_results(BUILT_IN, metrics).jobs == [FINISHED]
    assert list(collect(BUILT_IN, metrics)[0]["job"]) == [FINISHED]
    assert list(collect_generation(BUILT_IN, metrics)["job"]) == [FINISHED]
    assert list(read_job_metrics(BUILT_IN, metrics)["job"]) == [FINISHED]
    assert set(read_losses(BUILT_IN, metrics)["job"]) == {FINISHED} and set(read_val_losses(BUILT_IN, metrics)["job"]) == {FINISHED}


def test_a_missing_metrics_folder_holds_no_jobs(tmp_path):
    assert read_results(BUILT_IN, tmp_path / "absent").jobs == []
