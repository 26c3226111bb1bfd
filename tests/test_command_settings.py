"""The settings of model.facility, model.generate and model.evaluate_generation: one dataclass each
makes the flags, so flags and fields cannot drift apart, and the commands share one vocabulary."""
from __future__ import annotations

import dataclasses

import pytest

from model import config
from model.command_settings import (EvaluateGenerationSettings, FacilitySettings, GenerateSettings, add_flags,
                                    command_argv, from_args)
from model.errors import ArgumentParser, InputError
from model.settings import JobSettings

COMMANDS = (FacilitySettings, GenerateSettings, EvaluateGenerationSettings)
REQUIRED = {"checkpoint": "c.pt", "data_file": "d.npz"}


def required(cls) -> dict[str, str]:
    """A value for each field without a default (the flags a command cannot run without)."""
    return {f.name: REQUIRED[f.name] for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}


def required_argv(cls) -> list[str]:
    return [part for name, value in required(cls).items() for part in (f"--{name}", value)]


def parse(cls, argv):
    parser = ArgumentParser("test")
    add_flags(parser, cls, slurm_what="shard" if cls is FacilitySettings else None)
    return from_args(cls, parser.parse_args(argv))


def non_default(f: dataclasses.Field):
    """A value of a field that differs from its default."""
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != f.default)
    kind = f.type.removesuffix(" | None")
    default = f.default if f.default not in (None, dataclasses.MISSING) else 1
    return {"bool": lambda: not f.default, "int": lambda: default + 3, "float": lambda: default * 1.5 + 0.25,
            "list[str]": lambda: ["a_b_tp1:0.5", "c_d_tp2:0.5"]}.get(kind, lambda: f"other-{f.name}")()


@pytest.mark.parametrize("cls", COMMANDS)
def test_the_command_line_rebuilds_every_field(cls):
    values = {f.name: non_default(f) for f in dataclasses.fields(cls) if f.metadata["cli"]}
    settings = cls(**values)
    assert parse(cls, command_argv(settings)) == settings


@pytest.mark.parametrize("cls", COMMANDS)
def test_defaults_of_the_parser_are_the_fields_defaults(cls):
    assert parse(cls, required_argv(cls)) == cls(**required(cls))


def test_facility_writes_to_output_dir_and_takes_out_as_its_deprecated_spelling(capsys):
    assert parse(FacilitySettings, ["--output_dir", "site"]).output_dir == "site"
    assert capsys.readouterr().err == ""
    assert parse(FacilitySettings, ["--out", "old"]).output_dir == "old"
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: --out is deprecated") and "--output_dir" in notes[0]


@pytest.mark.parametrize("cls", COMMANDS)
def test_one_seed_range_in_every_command(cls):
    fill = {"rate_per_node": 1.0, "duration": 60.0} if cls is FacilitySettings else (
        {"rate": 1.0, "duration": 60.0} if cls is GenerateSettings else {})
    base = required(cls) | fill
    cls(**base, seed=config.MAX_SEED).validate()
    for seed in (-1, config.MAX_SEED + 1):
        with pytest.raises(InputError, match=r"--seed must lie in 0\.\.2\*\*32-1"):
            cls(**base, seed=seed).validate()
    job = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1, seed=config.MAX_SEED + 1)
    with pytest.raises(InputError, match=r"--seed must lie in 0\.\.2\*\*32-1"):
        job.validate()


@pytest.mark.parametrize("cls", (FacilitySettings, GenerateSettings))
def test_drain_time_is_one_flag_with_one_default(cls):
    assert parse(cls, required_argv(cls)).drain_s == config.DRAIN_S
    assert parse(cls, required_argv(cls) + ["--drain_s", "900"]).drain_s == 900.0


def test_a_negative_drain_time_is_refused():
    with pytest.raises(InputError, match="--drain_s"):
        GenerateSettings(checkpoint="c.pt", rate=1.0, duration=60.0, drain_s=-1.0).validate()
    with pytest.raises(InputError, match="--drain_s"):
        FacilitySettings(rate_per_node=1.0, duration=60.0, drain_s=float("nan")).validate()


@pytest.mark.parametrize("field,value", [("risk", 0.0), ("risk", 101.0), ("risk", float("nan")),
                                         ("warmup_s", -1.0), ("warmup_s", float("inf"))])
def test_a_risk_outside_a_percentile_or_a_negative_warm_up_is_refused(field, value):
    FacilitySettings(rate_per_node=1.0, duration=60.0, row_limit_kw=10.0, risk=100.0, warmup_s=0.0).validate()
    with pytest.raises(InputError, match=f"--{field}"):
        FacilitySettings(rate_per_node=1.0, duration=60.0, row_limit_kw=10.0, **{field: value}).validate()


@pytest.mark.parametrize("flags,problem", [
    ({"requests": "r.csv", "diurnal": "d.csv"}, "--diurnal shapes Poisson traffic"),
    ({"rate_per_node": 1.0, "duration": 60.0, "time_scale": 0.5}, "--time_scale and --drain_s apply to a --requests"),
    ({"rate_per_node": 1.0, "duration": 60.0, "drain_s": 10.0}, "--time_scale and --drain_s apply to a --requests"),
    ({"rate_per_node": 1.0, "duration": 60.0, "risk": 99.0}, "--risk and --draws size a row"),
    ({"rate_per_node": 1.0, "duration": 60.0, "draws": 50}, "--risk and --draws size a row"),
])
def test_a_flag_another_choice_makes_meaningless_is_refused_not_ignored(flags, problem):
    with pytest.raises(InputError, match=problem):
        FacilitySettings(**flags).validate()
    # each is fine where it means something
    meaningful = {"diurnal": {"rate_per_node": 1.0, "duration": 60.0}, "time_scale": {"requests": "r.csv"},
                  "drain_s": {"requests": "r.csv"}, "risk": {"row_limit_kw": 10.0},
                  "draws": {"row_limit_kw": 10.0}}
    flag = next(k for k in flags if k in meaningful)
    FacilitySettings(**({flag: flags[flag]} | {"rate_per_node": 1.0, "duration": 60.0} | meaningful[flag])
                     if flag not in ("time_scale", "drain_s") else {flag: flags[flag]} | meaningful[flag]).validate()


@pytest.mark.parametrize("seed", ["-1", str(config.MAX_SEED + 1)])
def test_one_seed_range_in_demo_data_and_prepare_data(tmp_path, monkeypatch, seed):
    from model import demo_data, prepare_data
    with pytest.raises(InputError, match=r"--seed must lie in 0\.\.2\*\*32-1"):
        demo_data.main(["--output_dir", str(tmp_path / "demo"), "--seed", seed])
    assert not (tmp_path / "demo").exists()
    monkeypatch.setattr("sys.argv", ["prepare_data", "--runs", str(tmp_path), "--model", "llama-3-8b",
                                     "--hardware", "a100", "--out", str(tmp_path / "a.npz"), "--seed", seed])
    with pytest.raises(InputError, match=r"--seed must lie in 0\.\.2\*\*32-1"):
        prepare_data.main()
    assert not (tmp_path / "a.npz").exists()


def test_demo_data_writes_to_output_dir_and_takes_out_as_its_deprecated_spelling(tmp_path, capsys):
    from model.demo_data import main
    assert main(["--out", str(tmp_path / "old"), "--rates", "2"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--out is deprecated" in notes[0] and "--output_dir" in notes[0]
    assert sorted(p.name for p in (tmp_path / "old").glob("*.npz")) == sorted(
        p.name for p in (tmp_path / "old").iterdir())
    assert any((tmp_path / "old").glob("*.npz"))
