"""One reader of a results folder: the tables and the figures see the same jobs."""
from __future__ import annotations

import json

from conftest import write_finished_job
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
        write_finished_job(metrics, job, {m: 0.5 for m in config.METRIC_ORDER}
                           | {"final_train_loss": float("nan") if job == NAN_LOSS else 0.5})
    for job in (FINISHED, DIVERGED_BEFORE, NAN_LOSS, UNFINISHED):
        (metrics / f"{job}_losses.csv").write_text("epoch,train_loss\n1,0.5\n")
        (metrics / f"{job}_val_losses.csv").write_text("epoch,val_loss\n1,0.6\n")
    (root / config.SUMMARY_FILE).write_text(json.dumps([{"job_name": DIVERGED_BEFORE, "status": "diverged"}]))
    return metrics


def test_tables_and_figures_read_the_same_jobs_from_a_results_folder(tmp_path):
    metrics = results_folder(tmp_path)
    assert read_results(BUILT_IN, metrics).jobs == [FINISHED]
    assert list(collect(BUILT_IN, metrics).metrics["job"]) == [FINISHED]
    assert list(collect_generation(read_results(BUILT_IN, metrics))["job"]) == [FINISHED]
    assert list(read_job_metrics(BUILT_IN, metrics)["job"]) == [FINISHED]
    assert set(read_losses(BUILT_IN, metrics)["job"]) == {FINISHED} and set(read_val_losses(BUILT_IN, metrics)["job"]) == {FINISHED}


def test_results_of_another_version_or_with_a_file_missing_are_refused(tmp_path):
    import pytest
    from model.errors import InputError
    metrics = results_folder(tmp_path)
    finished = metrics / f"{FINISHED}_metrics.csv"
    finished.write_text(finished.read_text().replace("results_version,1", "results_version,0"))
    with pytest.raises(InputError, match="another version of the pipeline.*rerun the job"):
        read_results(BUILT_IN, metrics)
    write_finished_job(metrics, FINISHED, {m: 0.5 for m in config.METRIC_ORDER})
    (metrics / f"{FINISHED}_provenance.json").unlink()
    with pytest.raises(InputError, match="provenance.json: missing beside"):
        read_results(BUILT_IN, metrics)


def test_a_missing_metrics_folder_holds_no_jobs(tmp_path):
    assert read_results(BUILT_IN, tmp_path / "absent").jobs == []
