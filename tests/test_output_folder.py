"""Reusing a site's output folder: refused while it holds another run's files, and --overwrite
removes those files only (model/sites/output_folder.py states the rule)."""
from __future__ import annotations

import json

import pytest

from conftest import files_under
from model.errors import InputError
from model.sites.output_folder import (SITE_SUBFOLDERS, SWEEP_SUBFOLDERS, check_previous_run, previous_run,
                                       remove_files)
from test_facility import _site

SMALL = ("--rate_per_node", "1", "--duration", "60")


def contents(folder) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in files_under(folder)}


def test_a_site_run_refuses_a_folder_holding_another_runs_files_and_changes_nothing(tiny_results, tmp_path):
    out = tmp_path / "out"
    assert _site(tiny_results, out, *SMALL, "--row_limit_kw", "5") == 0
    (out / "notes.txt").write_text("the user's own")
    before = contents(out)
    with pytest.raises(InputError, match=r"--output_dir .*out: holds another run's files .*add --overwrite") as err:
        _site(tiny_results, out, *SMALL, "--seed", "3")
    assert "\n" not in str(err.value)
    assert contents(out) == before


def test_overwrite_removes_the_previous_runs_files_and_nothing_else(tiny_results, tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    outside.write_text("not in the folder")
    assert _site(tiny_results, out, *SMALL, "--row_limit_kw", "5") == 0
    assert "oversubscription.csv" in files_under(out)
    (out / "notes.txt").write_text("the user's own")
    (out / "nodes").mkdir()                              # a failed --save_nodes run's leftovers,
    (out / "nodes" / "node_00000.npz").write_bytes(b"x")
    (out / "nodes" / "node_00001.npz").symlink_to(outside)     # one a link to a file outside the folder
    assert _site(tiny_results, out, *SMALL, "--overwrite") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert files_under(out) == set(manifest["files"]) | {"notes.txt"}
    assert "oversubscription.csv" not in files_under(out) and not (out / "nodes").exists()
    assert outside.read_text() == "not in the folder" and (out / "notes.txt").read_text() == "the user's own"


def test_a_folder_of_only_other_files_is_no_previous_run(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x")
    assert previous_run(tmp_path, SITE_SUBFOLDERS) == [] and previous_run(tmp_path / "missing", SITE_SUBFOLDERS) == []
    assert check_previous_run(tmp_path, False, SITE_SUBFOLDERS) == []


def test_a_failed_runs_own_subfolder_counts_as_another_runs_files(tmp_path):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "log.out").write_text("x")
    with pytest.raises(InputError, match="holds another run's files"):
        check_previous_run(tmp_path, False, SITE_SUBFOLDERS)
    found = check_previous_run(tmp_path, True, SITE_SUBFOLDERS)
    assert found == [tmp_path / "slurm" / "log.out"]
    remove_files(tmp_path, found)
    assert not (tmp_path / "slurm").exists()


@pytest.mark.parametrize("files,problem", [
    (None, "lists no files"),                       # an older version's manifest, or another program's
    (["../outside.txt"], "outside the folder"),
    (["/etc/hostname"], "outside the folder"),
])
def test_a_manifest_that_does_not_say_which_files_are_the_runs_is_refused_even_with_overwrite(tmp_path, files,
                                                                                             problem):
    folder, outside = tmp_path / "out", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("keep")
    (folder / "manifest.json").write_text(json.dumps({"layout": {}} | ({"files": files} if files else {})))
    with pytest.raises(InputError, match=problem):
        check_previous_run(folder, True, SITE_SUBFOLDERS)
    assert outside.read_text() == "keep" and (folder / "manifest.json").exists()


def test_a_second_demo_replaces_its_own_site_folder(tmp_path, capsys):
    import run_all_training
    from model.grid import load_grid
    from model import config
    from test_checkpoint import tiny_checkpoint
    tiny_checkpoint(config.checkpoint_path(tmp_path, "llama-3-70b_h100_tp8"), configuration={
        "model": "llama-3-70b", "hardware": "h100", "tp": 8, "job_name": "llama-3-70b_h100_tp8", "bin_s": 0.25,
        "gpu_tdp_w": 700.0})
    for _ in range(2):                    # the second would be refused without --overwrite
        run_all_training.demo_site(load_grid(), tmp_path, jobs=1)
    assert "manifest.json" in files_under(tmp_path / "facility")


def test_a_refused_overwriting_run_leaves_the_previous_results_as_they_were(tiny_results, tmp_path):
    out = tmp_path / "out"
    assert _site(tiny_results, out, *SMALL) == 0
    before = contents(out)
    # 40 requests/s per server is far outside what the made-up checkpoint trained on: --strict refuses it,
    # after the site was generated, when --overwrite would once have emptied the folder already
    with pytest.raises(InputError, match="--strict"):
        _site(tiny_results, out, "--rate_per_node", "40", "--duration", "60", "--overwrite", "--strict")
    assert contents(out) == before


def test_a_working_subfolder_of_someone_elses_files_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "runs" / "my_measurements").mkdir(parents=True)
    (tmp_path / "runs" / "my_measurements" / "power.csv").write_text("x")
    with pytest.raises(InputError, match="its runs/ holds 'my_measurements', which no run of this command writes"):
        check_previous_run(tmp_path, True, SWEEP_SUBFOLDERS)
    assert check_previous_run(tmp_path, True, SITE_SUBFOLDERS) == []       # not a site run's subfolder at all
    (tmp_path / "runs" / "my_measurements" / "power.csv").unlink()
    (tmp_path / "runs" / "my_measurements").rmdir()
    (tmp_path / "runs" / "s1_seed0").mkdir()
    (tmp_path / "runs" / "s1_seed0" / "manifest.json").write_text("{}")
    assert check_previous_run(tmp_path, True, SWEEP_SUBFOLDERS) == [tmp_path / "runs" / "s1_seed0" / "manifest.json"]


def test_a_file_of_someone_elses_that_the_run_would_replace_is_refused_and_kept(tiny_results, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("my own report")      # no manifest: not a run's
    with pytest.raises(InputError, match="holds report.html, which this run would replace"):
        _site(tiny_results, out, *SMALL, "--overwrite")
    assert contents(out) == {"report.html": b"my own report"}
