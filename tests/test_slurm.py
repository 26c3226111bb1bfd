"""The grid on a real Slurm cluster: the one tests/slurm/start_cluster.sh starts (.ci/run does).

The tests never install or start anything themselves. Without a cluster that is up they are
skipped with the reason, except under CI (CI set), where that is a failure; set
POWERTRACE_NO_SLURM=1 to skip them even where a cluster is up."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SITE_JOB, files_under, run_cli
from model import config


MODELS = ("--models", "llama-3-8b", "--hardware", "a100")
SLURM = ("--launcher", "slurm", "--slurm_cpus_per_job", "1", "--slurm_mem_gb", "2", "--slurm_time", "20")


def cluster_is_up() -> bool:
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip().rstrip("*") in ("idle", "mix", "alloc") for state in states.splitlines())


@pytest.fixture(scope="module")
def cluster():
    if os.environ.get("POWERTRACE_NO_SLURM") == "1":
        pytest.skip("POWERTRACE_NO_SLURM=1")
    if not cluster_is_up():
        reason = ("no Slurm cluster is up (sinfo shows no idle node); start one with "
                  "`bash tests/slurm/start_cluster.sh` (Debian, root)")
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run starts it before the tests")
        pytest.skip(reason)
    return True


def grid(data_dir, out, *extra, timeout=600):
    return run_cli("run_all_training.py", "--data_dir", str(data_dir), "--output_dir", str(out), *MODELS,
                   "--num_epochs", "2", "--lr", "3e-3", "--no_wandb", *extra, timeout=timeout)


def summary(out) -> list[dict]:
    return json.loads((out / config.SUMMARY_FILE).read_text())


def explain(proc, out) -> str:
    """The launcher's output and the tail of every job log, for an assertion message."""
    logs = [f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((out / config.LOGS_SUBDIR).glob("*.log"))] \
        if (out / config.LOGS_SUBDIR).exists() else []
    return "\n".join([proc.stdout[-3000:], proc.stderr[-3000:], *logs])


@pytest.mark.slow
def test_slurm_grid_gives_the_same_outputs_as_a_local_run(cluster, demo_dir, tmp_path):
    local = grid(demo_dir, tmp_path / "local", "--jobs", "2")      # one thread per job, like the tasks
    assert local.returncode == 0, local.stderr
    proc = grid(demo_dir, tmp_path / "slurm", *SLURM)
    assert proc.returncode == 0, explain(proc, tmp_path / "slurm")
    assert "submitted 2 tasks as Slurm job" in proc.stdout and "2 jobs: 2 succeeded" in proc.stdout
    records = summary(tmp_path / "slurm")
    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    assert all(r["slurm_job_id"] and r["returncode"] == 0 for r in records)
    ours = {f for f in files_under(tmp_path / "slurm") if not f.startswith("slurm/")}
    assert ours == files_under(tmp_path / "local")
    for job in ("llama-3-8b_a100_tp1", "llama-3-8b_a100_tp2"):
        for path in (config.metrics_path, config.losses_path):
            slurm_rows = path(tmp_path / "slurm", job).read_text().splitlines()
            local_rows = path(tmp_path / "local", job).read_text().splitlines()
            # identical but for the wall time
            assert [r for r in slurm_rows if "seconds" not in r] == [r for r in local_rows if "seconds" not in r]
        assert "model.train_entry" in config.log_path(tmp_path / "slurm", job).read_text()

    again = grid(demo_dir, tmp_path / "slurm", *SLURM, "--skip_existing")
    assert again.returncode == 0 and "submitted" not in again.stdout
    assert [r["status"] for r in summary(tmp_path / "slurm")] == ["skipped_existing"] * 2


@pytest.mark.slow
def test_no_wait_then_collect(cluster, demo_dir, tmp_path):
    out = tmp_path / "out"
    proc = grid(demo_dir, out, *SLURM, "--no_wait")
    assert proc.returncode == 0, proc.stderr
    assert "--collect" in proc.stdout
    assert {r["status"] for r in summary(out)} <= {"submitted"} and all(r["slurm_job_id"] for r in summary(out))
    deadline = time.time() + 300
    while True:
        collected = run_cli("run_all_training.py", "--collect", "--output_dir", str(out))
        if collected.returncode != 3 or time.time() > deadline:
            break
        assert "still queued or running" in collected.stdout
        time.sleep(3)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert [r["status"] for r in summary(out)] == ["succeeded", "succeeded"]
    assert len(list((out / "metrics").glob("*_metrics.csv"))) == 2


@pytest.mark.slow
def test_a_task_whose_job_fails_is_reported_failed(cluster, demo_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = demo_dir / "vllm-benchmark_llama-3-8b_a100.npz"
    (data / source.name).write_bytes(source.read_bytes()[:2000])    # a truncated file: the job exits 2
    proc = grid(data, tmp_path / "bad", *SLURM)
    assert proc.returncode == 1
    assert [(r["status"], r["returncode"]) for r in summary(tmp_path / "bad")] == [("failed", 2)] * 2
    assert "not a readable .npz" in config.log_path(tmp_path / "bad", "llama-3-8b_a100_tp1").read_text()


def squeue_states(array: str) -> dict[str, str]:
    lines = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", array], capture_output=True, text=True,
                           timeout=30).stdout.split("\n")
    return dict(line.split() for line in lines if line.strip())


@pytest.mark.slow
def test_a_cancelled_task_is_recorded_as_what_happened_to_it(cluster, demo_dir, tmp_path):
    """scancel reaches a running task's job as SIGTERM (interrupted, exit 143) and a pending task
    before it ever ran (failed, without a result). Each task takes a whole node's CPUs, so one
    runs while the other waits; the test waits for those states, not for time to pass."""
    node_cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True,
                               timeout=30).stdout.split()[0].rstrip("+")
    out = tmp_path / "killed"
    proc = grid(demo_dir, out, *SLURM, "--slurm_cpus_per_job", node_cpus, "--no_wait", "--num_epochs", "5000")
    assert proc.returncode == 0, proc.stderr
    records = summary(out)
    array = records[0]["slurm_job_id"].split("_")[0]
    deadline = time.time() + 180

    def one_training_one_waiting() -> str | None:
        states = squeue_states(array)
        running = [r for r in records if states.get(r["slurm_job_id"]) == "RUNNING"]
        pending = [r for r in records if states.get(r["slurm_job_id"]) == "PENDING"]
        if len(running) == 1 and len(pending) == 1 and (out / running[0]["log"]).exists() \
                and "training on" in (out / running[0]["log"]).read_text():
            return running[0]["job_name"]
        return None

    while (running := one_training_one_waiting()) is None:
        assert time.time() < deadline, squeue_states(array)
        time.sleep(1)
    subprocess.run(["scancel", array], check=True)
    while (collected := run_cli("run_all_training.py", "--collect", "--output_dir", str(out))).returncode == 3:
        assert time.time() < deadline, collected.stdout
        time.sleep(2)
    assert collected.returncode == 1
    outcome = {r["job_name"]: (r["status"], r["returncode"], r["note"]) for r in summary(out)}
    status, returncode, note = outcome.pop(running)
    assert (status, returncode) == ("interrupted", 143) and "SIGTERM" in note, outcome
    [(status, returncode, note)] = outcome.values()
    assert (status, returncode) == ("failed", None) and "without a result" in note


@pytest.mark.slow
def test_interrupted_launcher_cancels_its_tasks(cluster, demo_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "run_all_training.py", "--data_dir", str(demo_dir), "--output_dir", str(out), *MODELS,
           "--num_epochs", "5000", "--no_wandb", *SLURM]
    launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, WANDB_MODE="disabled"))
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if "submitted 2 tasks" in line:
            break
    array = line.split("Slurm job ")[1].split()[0]
    time.sleep(3)
    launcher.send_signal(signal.SIGINT)
    rest, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, "".join(lines) + rest
    deadline = time.time() + 60
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the launcher's Slurm tasks are still queued"
        time.sleep(1)
    assert [r["status"] for r in summary(out)] == ["interrupted"] * 2


@pytest.mark.slow
def test_a_site_generated_by_slurm_tasks_equals_the_local_one(cluster, site_results, tmp_path):
    site = ("-m", "model.facility", "--config", SITE_JOB, "--results_dir", str(site_results), "--rows", "1",
            "--racks_per_row", "3", "--nodes_per_rack", "2", "--rate_per_node", "1", "--duration", "900",
            "--seed", "3", "--no_progress")
    local = run_cli(*site, "--output_dir", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    proc = run_cli(*site, "--output_dir", str(tmp_path / "slurm"), "--launcher", "slurm", "--racks_per_task", "2",
                   "--slurm_cpus_per_job", "1", "--slurm_mem_gb", "2", "--slurm_time", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 2 tasks as Slurm job" in proc.stdout         # racks 0-1 and rack 2
    ours = {f for f in files_under(tmp_path / "slurm") if not f.startswith("slurm/")}
    assert ours == files_under(tmp_path / "local")
    for name in ("site_power.csv", "site_power_15min.csv", "facility_metrics.csv", "sizing_table.tex"):
        assert (tmp_path / "slurm" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name

    # a task that fails (here: its checkpoint is gone when it runs) fails the run, which writes nothing
    broken = tmp_path / "broken_results"
    shutil.copytree(site_results, broken)
    sabotage = ["--slurm_setup", f"rm -f {config.checkpoint_path(broken, SITE_JOB)}"]
    proc = run_cli(*site[:5], str(broken), *site[6:], "--output_dir", str(tmp_path / "failed"), "--launcher", "slurm",
                   "--slurm_cpus_per_job", "1", "--slurm_mem_gb", "2", "--slurm_time", "20", *sabotage)
    assert proc.returncode == 1 and "Slurm tasks failed" in proc.stderr, proc.stdout + proc.stderr
    assert {f for f in files_under(tmp_path / "failed") if not f.startswith("slurm/")} == set()


@pytest.mark.slow
def test_dry_run_shows_the_submission_and_submits_nothing(tmp_path):
    proc = run_cli("run_all_training.py", "--output_dir", str(tmp_path / "out"), "--launcher", "slurm",
                   "--slurm_partition", "gpu", "--slurm_gpus_per_job", "1", "--slurm_time", "90",
                   "--slurm_setup", "module load cuda/12.4", "--dry_run")
    assert proc.returncode == 0, proc.stderr
    for line in ("#SBATCH --array=0-15%16", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=90", "#SBATCH --cpus-per-task=4", "module load cuda/12.4"):
        assert line in proc.stdout
    assert sum("-m model.train_entry" in line for line in proc.stdout.splitlines()) == 16
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args, problem", [
    (("--launcher", "slurm", "--slurm_time", "0"), "--slurm_time must be at least 1"),
    (("--no_wait",), "--no_wait is for --launcher slurm"),
])
def test_bad_slurm_options_exit_2(args, problem, tmp_path):
    proc = run_cli("run_all_training.py", "--output_dir", str(tmp_path), "--dry_run", *args)
    assert proc.returncode == 2 and problem in proc.stderr


@pytest.mark.slow
def test_collect_without_a_submission_exit_2(tmp_path):
    proc = run_cli("run_all_training.py", "--collect", "--output_dir", str(tmp_path))
    assert proc.returncode == 2 and "jobs_summary.json" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("ci,outcome", [("", "skipped"), ("true", "error")])
def test_without_a_cluster_slurm_tests_skip_with_the_reason_and_fail_only_under_ci(tmp_path, ci, outcome):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "POWERTRACE_NO_SLURM")}
    env |= {"PATH": str(tmp_path), "CI": ci}           # no sinfo on the PATH: no cluster to be found
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_slurm.py"), "-k", "no_wait_then_collect"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert outcome in proc.stdout.splitlines()[-1], proc.stdout[-2000:]
    assert "no Slurm cluster is up" in proc.stdout


def _record(out):
    from model.launcher import JobRecord
    return JobRecord(model="a", hardware="b", tp=1, job_name="a_b_tp1", data_file="d.npz", command="x",
                     log=str(out / "logs" / "a_b_tp1.log"), slurm_job_id="123_0", status="submitted")


class _RunsCode:
    """Unpickling this creates the file `marker`: what a planted result pickle could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.slow
def test_collect_never_unpickles_a_planted_result_file(tmp_path, monkeypatch):
    import pickle
    from model import slurm
    from model.launcher import save_summary
    out = tmp_path / "out"
    (out / slurm.SLURM_SUBDIR).mkdir(parents=True)
    save_summary(out, [_record(out)])
    marker = tmp_path / "code_ran"
    (out / slurm.SLURM_SUBDIR / "123_0_0_result.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    monkeypatch.setattr(slurm, "queued_tasks", lambda ids: {})       # Slurm lists it no more
    [record] = slurm.collect(out, echo=lambda *a: None)
    assert not marker.exists()
    assert record.status == "failed" and "without a result" in record.note


@pytest.mark.slow
def test_a_task_result_comes_back_through_its_own_file(tmp_path, monkeypatch):
    from model import slurm
    from model.launcher import save_summary
    out = tmp_path / "out"
    save_summary(out, [_record(out)])
    job = slurm.submitit.SlurmJob(folder=out / slurm.SLURM_SUBDIR, job_id="123_0")
    slurm.write_result(slurm.result_path(job.paths), {"returncode": 0, "seconds": 1.5})
    monkeypatch.setattr(slurm, "queued_tasks", lambda ids: {})
    [record] = slurm.collect(out, echo=lambda *a: None)
    assert (record.status, record.returncode, record.seconds) == ("succeeded", 0, 1.5)


@pytest.mark.slow
def test_a_site_shard_survives_the_result_file_unchanged(tmp_path):
    import numpy as np
    from model import slurm
    shard = [(3, np.arange(5.0), [[1.0, 2.0]], [{0.1: {"peak": 2.0}, 60.0: {"peak": 1.5}}],
              [[4, np.int64(10), np.int64(7)]])]
    slurm.write_result(tmp_path / "r.npz", shard)
    back = slurm.read_result(tmp_path / "r.npz")
    assert back[0][0] == 3 and isinstance(back[0], tuple)
    np.testing.assert_array_equal(back[0][1], shard[0][1])
    assert back[0][2:] == shard[0][2:]


@pytest.mark.slow
@pytest.mark.parametrize("flag,value", [("--slurm_partition", "gpu\n#SBATCH --uid=0"),
                                        ("--slurm_partition", "gpu --exclusive"),
                                        ("--slurm_setup", "module load cuda\n#SBATCH --uid=0")])
def test_a_line_break_in_a_slurm_flag_cannot_add_sbatch_lines(tmp_path, flag, value):
    import run_all_training
    from conftest import run_main
    code, out, err = run_main(run_all_training, "--output_dir", tmp_path / "out", "--launcher", "slurm",
                              flag, value, "--dry_run")
    assert code == 2 and flag in err and "#SBATCH --uid" not in out
    assert not (tmp_path / "out").exists()


SINFO = "debug* 2\ndebug* 2\nbig 64\n"


def test_tasks_asking_more_cpus_than_any_node_are_refused():
    from model.slurm import partition_cpu_problem
    problem = partition_cpu_problem(SINFO, None, 4)
    assert problem and "debug" in problem and "at most 2 CPUs" in problem
    assert partition_cpu_problem(SINFO, "big", 4) is None
    assert partition_cpu_problem(SINFO, None, 2) is None
    assert partition_cpu_problem("", None, 4) is None          # sinfo said nothing: no check


def test_collect_of_interrupted_tasks_fails_and_says_so(tmp_path, capsys):
    import run_all_training
    from dataclasses import asdict
    from model.launcher import JobRecord
    records = [JobRecord("llama-3-8b", "a100", tp, f"llama-3-8b_a100_tp{tp}", "x.npz", "cmd",
                         status="interrupted", slurm_job_id=f"7_{tp}", note="Slurm task cancelled")
               for tp in (1, 2)]
    (tmp_path / config.SUMMARY_FILE).write_text(json.dumps([asdict(r) for r in records]))
    assert run_all_training.collect_submitted(tmp_path) == 1
    assert "2 of 2 jobs did not finish: 2 interrupted" in capsys.readouterr().err
