"""model.generate against hostile and clumsy input, in-process (no training: made-up checkpoints)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import files_under, run_main
from model import generate
from test_checkpoint import crafted, tiny_checkpoint


@pytest.mark.parametrize("job_name", ["../../escaped", "/tmp/powertrace_escaped_by_checkpoint", "m_h_tp1\n"])
def test_a_crafted_job_name_cannot_choose_where_generate_writes(tmp_path, monkeypatch, job_name):
    ckpt = tmp_path / "in" / "c.pt"
    ckpt.parent.mkdir()
    crafted(ckpt, lambda r: r["configuration"].update(job_name=job_name))
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--rate", "1", "--duration", "10")
    assert code == 2 and "job_name" in err and len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == {"in/c.pt"}
    assert not Path("/tmp/powertrace_escaped_by_checkpoint_rate1_10s_seed0.csv").exists()


@pytest.mark.parametrize("onto", ["--checkpoint", "--requests"])
def test_out_onto_an_input_is_refused_and_the_input_kept(tmp_path, onto):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    requests = tmp_path / "requests.csv"
    requests.write_text("arrival_time_s,input_tokens,output_tokens\n0.5,10,5\n2.0,20,6\n")
    before = {p: p.read_bytes() for p in (ckpt, requests)}
    target = ckpt if onto == "--checkpoint" else requests
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--requests", requests, "--out", target)
    assert code == 2 and onto in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in (ckpt, requests)} == before
    assert files_under(tmp_path) == {"c.pt", "requests.csv"}


def test_a_fifo_as_requests_file_is_refused_without_blocking(tmp_path):
    from conftest import fails_instead_of_hanging, fifo
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    pipe = fifo(tmp_path / "requests.csv")
    with fails_instead_of_hanging():
        code, _, err = run_main(generate, "--checkpoint", ckpt, "--requests", pipe, "--out", tmp_path / "o.csv")
    assert code == 2 and "named pipe" in err and not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("traffic", [["--rate", "1e12", "--duration", "1e15"], ["--rate", "1e-9", "--duration", "1e15"],
                                     ["--requests", "LATE"]])
def test_traffic_beyond_memory_is_one_line_before_anything_is_allocated(tmp_path, traffic):
    ckpt = tiny_checkpoint(tmp_path / "c.pt")
    late = tmp_path / "late.csv"
    late.write_text("arrival_time_s,input_tokens,output_tokens\n1.0,10,5\n1e12,20,6\n")    # an arrival at 1e12 s
    traffic = [str(late) if t == "LATE" else t for t in traffic]
    code, _, err = run_main(generate, "--checkpoint", ckpt, *traffic, "--out", tmp_path / "o.csv")
    assert code == 2 and "GiB of memory" in err and len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == {"c.pt", "late.csv"}


def test_the_output_reports_the_share_above_nameplate_and_peaks_of_the_trace_and_the_training_data(tmp_path):
    # a nameplate of 250 W under a 300 W state: the generated trace goes past it in some bins
    ckpt = tiny_checkpoint(tmp_path / "c.pt", configuration={"model": "m", "hardware": "h", "tp": 1,
                                                             "job_name": "m_h_tp1", "bin_s": 0.25, "gpu_tdp_w": 250.0})
    out = tmp_path / "g.csv"
    code, stdout, err = run_main(generate, "--checkpoint", ckpt, "--rate", "2", "--duration", "120", "--out", out)
    assert code == 0, err
    watts = pd.read_csv(out)["power_w"].to_numpy()
    report = json.loads(out.with_name("g.csv.json").read_text())
    assert report["server"] == {}            # the made-up checkpoint's training runs recorded no settings
    nameplate = report["nameplate"]
    assert nameplate["nameplate_w"] == 250.0
    assert nameplate["share_above_nameplate"] == pytest.approx((watts > 250.0).mean(), abs=1e-9)
    assert 0 < nameplate["share_above_nameplate"] < 1
    assert nameplate["peak_0.25s_w"] == pytest.approx(watts.max(), rel=1e-5)
    assert nameplate["peak_1s_w"] == pytest.approx(watts.reshape(-1, 4).mean(axis=1).max(), rel=1e-5)
    assert nameplate["peak_60s_w"] == pytest.approx(watts.reshape(-1, 240).mean(axis=1).max(), rel=1e-5)
    assert report["training_nameplate"]["share_above_nameplate"] == 0.0        # as the checkpoint records
    assert "above the 250 W nameplate" in stdout and "ceiling" not in stdout.replace("not a ceiling", "")


def _ranges(high: float) -> dict:
    """Training traffic whose every quantity reached `high` (from 0)."""
    from test_checkpoint import TRAINING_TRAFFIC
    return TRAINING_TRAFFIC | {name: {"low": 0.0, "high": high, "mean": high / 2}
                               for name in ("arrival_rate_per_s", "prompt_tokens_per_s", "output_tokens_per_s",
                                            "active_requests")}


def test_traffic_the_checkpoint_trained_on_gives_no_notice_and_records_its_share(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e9))
    out = tmp_path / "g.csv"
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--rate", "2", "--duration", "120", "--out", out)
    assert code == 0, err
    assert "notice" not in err
    report = json.loads(out.with_name("g.csv.json").read_text())
    assert report["warnings"] == [] and report["extrapolation"]["share_outside"] == 0.0
    assert report["extrapolation"]["training"]["arrival_rate_per_s"]["high"] == 1e9


def test_traffic_outside_the_training_range_is_one_notice_recorded_in_the_json(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e-3))
    out = tmp_path / "g.csv"
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--rate", "2", "--duration", "120", "--out", out)
    assert code == 0, err
    notices = [line for line in err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "outside what the checkpoint trained on in 100.0 % of bins" in notices[0]
    report = json.loads(out.with_name("g.csv.json").read_text())
    assert report["warnings"] == [notices[0].removeprefix("notice: ")]
    assert report["extrapolation"]["share_outside"] == 1.0


def test_requests_unfinished_at_the_end_are_counted_noticed_and_recorded(tmp_path):
    # a server decoding one token a second: requests of 500 output tokens never finish in 70 s
    from model.generation.serving import ServingModel
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e9),
                           serving_model=ServingModel(1000.0, 1.0, 0.0).to_dict())
    requests = tmp_path / "requests.csv"
    requests.write_text("arrival_time_s,input_tokens,output_tokens\n"
                        + "".join(f"{t},10,{500 if t % 2 else 1}\n" for t in range(10)))
    out = tmp_path / "g.csv"
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--requests", requests, "--out", out)
    assert code == 0, err
    assert "notice: 5 of 10 requests (50.0 %) are unfinished" in err
    report = json.loads(out.with_name("g.csv.json").read_text())
    assert report["extrapolation"]["unfinished_requests"] == 5 and report["extrapolation"]["requests"] == 10
    assert any("unfinished" in w for w in report["warnings"])


def test_a_full_batch_cap_is_noticed(tmp_path):
    # a cap of 2 requests and 20 requests at once: the batch is full from the start
    from model.generation.serving import ServingModel
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e9),
                           serving_model=ServingModel(1000.0, 0.5, 0.0, max_batch=2).to_dict())
    requests = tmp_path / "requests.csv"
    requests.write_text("arrival_time_s,input_tokens,output_tokens\n" + "0.0,10,20\n" * 20)
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--requests", requests, "--out", tmp_path / "g.csv")
    assert code == 0, err
    assert "notice: the serving model's batch cap of 2 requests" in err


def test_strict_turns_a_notice_into_exit_2_with_nothing_written(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "c.pt", training_traffic=_ranges(1e-3))
    code, _, err = run_main(generate, "--checkpoint", ckpt, "--rate", "2", "--duration", "120", "--out",
                            tmp_path / "g.csv", "--strict")
    assert code == 2 and err.strip().startswith("generate: error: --strict: the traffic lies outside")
    assert len(err.strip().splitlines()) == 1
    assert files_under(tmp_path) == {"c.pt"}
