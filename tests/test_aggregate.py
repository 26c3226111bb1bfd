"""The aggregator against hand-written metrics files, and the table through real pdflatex."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import run_cli, run_main, write_finished_job
from model import config
from model.errors import InputError
from model.grid import BUILT_IN



def two_column_log(folder, table: str) -> str:
    """pdflatex's log of `table` (a .tex file in `folder`) inside a two-column article; fails
    if it does not compile."""
    (folder / "paper.tex").write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
                                      f"\\begin{{document}}\n\\input{{{table}}}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return (folder / "paper.log").read_text(errors="replace")


def write_metrics(folder, job, f1, r2, mae, ece):
    values = dict(zip(config.METRIC_ORDER, [f1, 0.5, 0.5, ece, r2, mae, 0.1, 0.2, 0.6]))
    write_finished_job(folder, job, values | {"energy_error_pct": 1.0})


EXPECTED_TABLE = r"""\begin{table*}[!htb]
\centering
\small
\caption{Power-state classifier evaluation per model: mean~$\pm$~population standard deviation over hardware and tensor-parallel configurations (--: one configuration).}
\label{tab:train_eval_model}
\vspace{0.4em}
\begin{tabular}{lcccc}
\toprule
\textbf{Model} & \begin{tabular}[b]{@{}c@{}}\textbf{Validation}\\\textbf{F1}~$\uparrow$\end{tabular} & \begin{tabular}[b]{@{}c@{}}\textbf{Autocorr}\\\textbf{$R^2$}~$\uparrow$\end{tabular} & \begin{tabular}[b]{@{}c@{}}\textbf{Transition}\\\textbf{MAE (W)}~$\downarrow$\end{tabular} & \begin{tabular}[b]{@{}c@{}}\textbf{Expected}\\\textbf{Calibration Error}~$\downarrow$\end{tabular} \\
\midrule
\texttt{Llama-3.1 (8B)} & 0.50~$\pm$~0.10 & 0.70~$\pm$~0.10 & 15.0~$\pm$~5.0 & 0.0200~$\pm$~0.0100 \\
\texttt{DeepSeek-Distill (70B)} & 0.90~$\pm$~-- & 0.80~$\pm$~-- & 100.0~$\pm$~-- & 0.0500~$\pm$~-- \\
\bottomrule
\end{tabular}
\end{table*}
"""


@pytest.fixture
def metrics_dir(tmp_path):
    folder = tmp_path / "metrics"
    write_metrics(folder, "llama-3-8b_a100_tp1", 0.4, 0.6, 10.0, 0.01)
    write_metrics(folder, "llama-3-8b_h100_tp2", 0.6, 0.8, 20.0, 0.03)
    write_metrics(folder, "deepseek-r1-distill-70b_h100_tp8", 0.9, 0.8, 100.0, 0.05)
    (folder / "llama-3-8b_a100_tp1_losses.csv").write_text("epoch,train_loss\n1,0.5\n")
    return folder


def aggregate_cli(metrics_dir, out):
    return run_main("aggregate_metrics.py", "--metrics_dir", str(metrics_dir),
                   "--out", str(out / "table.tex"), "--csv_output", str(out / "stats.csv"))


@pytest.mark.slow
def test_exact_table_statistics_and_notes(metrics_dir, tmp_path):
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    stamp, table = (tmp_path / "table.tex").read_text().split("\n", 1)
    assert stamp.startswith("% jobs of unknown commit; table by commit ")
    assert table == EXPECTED_TABLE
    stats = pd.read_csv(tmp_path / "stats.csv")
    assert list(stats.columns) == ["model", "val_f1_mean", "val_f1_std", "autocorr_r2_mean", "autocorr_r2_std",
                                   "transition_mae_mean", "transition_mae_std", "ece_mean", "ece_std",
                                   "acf_mae_mean", "acf_mae_std", "energy_error_pct_mean",
                                   "energy_error_pct_std", "n_configs"]
    assert stats.set_index("model").loc["llama-3-8b", "energy_error_pct_mean"] == 1.0
    llama = stats.set_index("model").loc["llama-3-8b"]
    assert llama["val_f1_mean"] == pytest.approx(0.5) and llama["val_f1_std"] == pytest.approx(0.1)  # ddof=0
    assert llama["n_configs"] == 2
    assert "llama-3-8b: 2 of 4 configurations" in proc.stdout
    assert "deepseek-r1-distill-70b: 1 of 4 configurations" in proc.stdout


@pytest.mark.slow
def test_nan_kept_out_of_means_with_a_note(metrics_dir, tmp_path):
    write_metrics(metrics_dir, "llama-3-8b_a100_tp2", 0.5, 0.7, float("nan"), 0.02)
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    llama = pd.read_csv(tmp_path / "stats.csv").set_index("model").loc["llama-3-8b"]
    assert llama["transition_mae_mean"] == pytest.approx(15.0) and llama["n_configs"] == 3
    assert "transition_mae is NaN in 1 of 3" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("content,problem", [
    ("", "empty"),
    ("metric,value\nval_f1,0.5\n", "missing"),
    ("metric,value\n" + "".join(f"{m},abc\n" for m in config.METRIC_ORDER), "not a number"),
    ("metric,value\n" + "".join(f"{m},0.5\n" for m in config.METRIC_ORDER), "another version"),
])
def test_damaged_metrics_file_exit_2_naming_it(metrics_dir, tmp_path, content, problem):
    bad = metrics_dir / "llama-3-70b_a100_tp4_metrics.csv"
    bad.write_text(content)
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and problem in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "table.tex").exists() and not (tmp_path / "stats.csv").exists()


@pytest.mark.slow
def test_no_metrics_file_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        proc = aggregate_cli(folder, tmp_path)
        assert proc.returncode == 2 and str(folder) in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None and not os.environ.get("CI"),
                    reason="pdflatex not installed (.ci/run installs it)")
def test_tables_compile_and_fit_a_two_column_page(metrics_dir, tmp_path):
    for job, ks in (("llama-3-8b_a100_tp1", 0.1), ("llama-3-8b_h100_tp2", 0.3), ("deepseek-r1-distill-70b_h100_tp8", 0.2)):
        write_generation(metrics_dir, job, ks, 1200.0)
    assert aggregate_cli(metrics_dir, tmp_path).returncode == 0
    for table in ("table.tex", "generation_fidelity.tex"):      # both table*: the page's full width
        assert "Overfull \\hbox" not in two_column_log(tmp_path, table), table
    assert (tmp_path / "paper.pdf").stat().st_size > 1000


def write_generation(folder, job, ours_ks, tdp_energy):
    rows = [f"ours,{ours_ks},0.9,0.2,3.0,4.0,2.0", f"tdp,1.0,0.0,1.5,120.0,110.0,{tdp_energy}",
            "mean,0.7,0.0,0.3,20.0,25.0,5.0", "marginal,0.1,0.0,0.4,4.0,6.0,1.0",
            "measured_features,0.1,0.95,0.15,2.0,3.0,1.5"]
    (folder / f"{job}_generation.csv").write_text(
        "method,ks,acf_r2,nrmse,p95_error_pct,p99_error_pct,energy_error_pct\n" + "\n".join(rows) + "\n")


@pytest.mark.slow
def test_generation_statistics_pool_every_configuration(metrics_dir, tmp_path):
    write_generation(metrics_dir, "llama-3-8b_a100_tp1", 0.10, 200.0)
    write_generation(metrics_dir, "llama-3-8b_h100_tp2", 0.30, 300.0)
    write_generation(metrics_dir, "deepseek-r1-distill-70b_h100_tp8", 0.20, 150.0)
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = pd.read_csv(tmp_path / "generation_statistics.csv").set_index(["model", "method"])
    llama = stats.loc[("llama-3-8b", "ours")]
    assert llama["ks_mean"] == pytest.approx(0.2) and llama["ks_std"] == pytest.approx(0.1)
    assert stats.loc[("llama-3-8b", "tdp"), "energy_error_pct_mean"] == pytest.approx(250.0)
    assert stats.loc[("llama-3-8b", "tdp"), "n_configs"] == 2
    assert stats.loc[("deepseek-r1-distill-70b", "ours"), "ks_std"] == 0.0
    table = (tmp_path / "generation_fidelity.tex").read_text()
    assert table.startswith("\\begin{table*}[!htb]\n\\centering\n\\small\n")
    assert "\\label{tab:generation_fidelity}\n\\vspace{0.4em}" in table
    assert "\\quad Ours & 0.20~$\\pm$~0.10 &" in table and "\\quad Nameplate (TDP) &" in table
    if shutil.which("pdflatex"):
        two_column_log(tmp_path, "generation_fidelity.tex")


@pytest.mark.slow
def test_outputs_default_beside_the_metrics_they_come_from(metrics_dir, tmp_path):
    proc = run_cli("aggregate_metrics.py", "--metrics_dir", str(metrics_dir))
    assert proc.returncode == 0, proc.stderr
    assert (metrics_dir.parent / "table_summary.tex").exists()
    assert (metrics_dir.parent / "model_statistics.csv").exists()


def write_provenance(metrics_dir, job, **settings):
    base = {"lr": 0.003, "num_epochs": 30, "hidden_size": 64, "num_layers": 2, "dropout": 0.2,
            "num_states": 6, "val_split": 0.2, "seed": 0, "gru_impl": "fused", "model": "x",
            "hardware": "a100", "tp": 1, "data_sha256": "ab"}
    record = {"git": {"commit": "0123456789abcdef", "dirty": False}, "data": "simulated demo data",
              "settings": base | settings}
    (metrics_dir / f"{job}_provenance.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_jobs_trained_with_different_settings_are_not_pooled(metrics_dir, tmp_path):
    write_provenance(metrics_dir, "llama-3-8b_a100_tp1", num_epochs=6)
    write_provenance(metrics_dir, "llama-3-8b_h100_tp2", num_epochs=5)
    write_provenance(metrics_dir, "deepseek-r1-distill-70b_h100_tp8", num_epochs=5)
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "num_epochs differs" in proc.stderr and "llama-3-8b_a100_tp1" in proc.stderr
    assert "llama-3-8b_h100_tp2" in proc.stderr and not (tmp_path / "table.tex").exists()
    proc = run_main("aggregate_metrics.py", "--metrics_dir", str(metrics_dir), "--out", str(tmp_path / "t.tex"),
                   "--csv_output", str(tmp_path / "s.csv"), "--allow_mixed_settings")
    assert proc.returncode == 0 and "pooled despite: num_epochs differs" in proc.stdout


@pytest.mark.slow
def test_table_and_all_jobs_csv_say_where_the_numbers_came_from(metrics_dir, tmp_path):
    for job in ("llama-3-8b_a100_tp1", "llama-3-8b_h100_tp2", "deepseek-r1-distill-70b_h100_tp8"):
        write_provenance(metrics_dir, job)
    proc = aggregate_cli(metrics_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    stamp = (tmp_path / "table.tex").read_text().splitlines()[0]
    assert stamp.startswith("% jobs at commit 0123456789ab;") and "simulated demo data" in stamp
    all_jobs = pd.read_csv(tmp_path / "all_jobs.csv")
    assert len(all_jobs) == 3 and {"job", "val_f1", "ece", "num_epochs", "lr", "git_commit"} <= set(all_jobs.columns)
    assert set(all_jobs["num_epochs"]) == {30}


@pytest.mark.slow
def test_output_and_csv_output_on_one_file_is_refused_before_writing(metrics_dir, tmp_path):
    import aggregate_metrics
    from conftest import files_under, run_main
    before = files_under(tmp_path)
    same = tmp_path / "out" / "both.txt"
    code, _, err = run_main(aggregate_metrics, "--metrics_dir", metrics_dir, "--out", same, "--csv_output", same)
    assert code == 2 and "--csv_output" in err and "is also --out;" in err
    assert files_under(tmp_path) == before


def _provenance_with(metrics_dir, data: str):
    for job in ("llama-3-8b_a100_tp1", "llama-3-8b_h100_tp2", "deepseek-r1-distill-70b_h100_tp8"):
        write_provenance(metrics_dir, job)
        path = metrics_dir / f"{job}_provenance.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"data": data}))


def _aggregate_with_data_field(metrics_dir, out, data: str) -> None:
    """The aggregator run in-process on jobs whose provenance 'data' field is `data`."""
    import aggregate_metrics
    from conftest import run_main
    _provenance_with(metrics_dir, data)
    code, _, err = run_main(aggregate_metrics, "--metrics_dir", metrics_dir, "--out", out / "table.tex",
                            "--csv_output", out / "stats.csv")
    assert code == 0, err


@pytest.mark.slow
def test_a_line_break_in_a_provenance_field_stays_inside_the_tables_comment(metrics_dir, tmp_path):
    _aggregate_with_data_field(metrics_dir, tmp_path, "demo\n\\input{/etc/hostname}\r\n% more")
    lines = (tmp_path / "table.tex").read_text().splitlines()
    assert lines[0].startswith("% ") and r"\input{/etc/hostname}" in lines[0]
    assert lines[1] == r"\begin{table*}[!htb]"


@pytest.mark.slow
def test_all_jobs_csv_cells_a_spreadsheet_would_run_are_quoted_as_text(metrics_dir, tmp_path):
    _aggregate_with_data_field(metrics_dir, tmp_path, "=cmd|' /C calc'!A0")
    all_jobs = pd.read_csv(tmp_path / "all_jobs.csv")
    assert set(all_jobs["data"]) == {"'=cmd|' /C calc'!A0"}
    assert all_jobs["val_f1"].dtype == float          # numbers stay numbers


@pytest.mark.slow
def test_a_fifo_in_the_metrics_folder_is_refused_without_blocking(metrics_dir, tmp_path):
    import aggregate_metrics
    from conftest import fails_instead_of_hanging, fifo, run_main
    fifo(metrics_dir / "llama-3-8b_a100_tp2_metrics.csv")
    with fails_instead_of_hanging():
        code, _, err = run_main(aggregate_metrics, "--metrics_dir", metrics_dir, "--out", tmp_path / "t.tex",
                                "--csv_output", tmp_path / "s.csv")
    assert code == 2 and "named pipe" in err and not (tmp_path / "t.tex").exists()


def test_aggregator_leaves_out_diverged_jobs_with_a_note(tmp_path):
    from model.aggregate import collect
    folder = tmp_path / "metrics"
    folder.mkdir()
    for job, loss in (("llama-3-8b_a100_tp1", "0.5"), ("llama-3-8b_a100_tp2", "nan"),
                      ("llama-3-8b_h100_tp1", "0.4")):
        write_finished_job(folder, job, {m: 0.5 for m in config.METRIC_ORDER} | {"final_train_loss": float(loss)})
    (tmp_path / config.SUMMARY_FILE).write_text(json.dumps([{"job_name": "llama-3-8b_h100_tp1",
                                                             "status": "diverged"}]))
    found = collect(BUILT_IN, folder)
    results, notes = found.metrics, found.notes
    assert list(results["job"]) == ["llama-3-8b_a100_tp1"]
    assert sum("left out" in n and "diverged" in n for n in notes) == 2


def test_aggregator_output_onto_a_folder_is_one_line(tmp_path):
    from model.aggregate import aggregate
    folder = tmp_path / "metrics"
    folder.mkdir()
    write_finished_job(folder, "llama-3-8b_a100_tp1", {m: 0.5 for m in config.METRIC_ORDER})
    (tmp_path / "table.tex").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        aggregate(BUILT_IN, folder, tmp_path / "table.tex", tmp_path / "stats.csv")


def test_the_table_file_is_out_and_output_its_deprecated_spelling(metrics_dir, tmp_path):
    import aggregate_metrics
    code, _, err = run_main(aggregate_metrics, "--metrics_dir", metrics_dir, "--output", tmp_path / "old.tex",
                            "--csv_output", tmp_path / "stats.csv")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert [n for n in notes if "--output is deprecated" in n and "--out" in n] == notes[:1]
    assert (tmp_path / "old.tex").exists()
