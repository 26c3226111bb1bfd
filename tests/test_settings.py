"""One dataclass makes the flags, the command line and the fingerprint: they cannot drift apart."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import ROOT
from model.errors import ArgumentParser, InputError
from model.launcher import LaunchSettings, job_settings, train_command
from model.grid import BUILT_IN
from model.settings import RESULT_KEYS, JobSettings, add_job_flags, fingerprint, job_argv, settings_from_args


def non_default(f: dataclasses.Field):
    """A valid value of a field that differs from its default."""
    special = {"data_file": "x.npz", "model": "llama-3-70b", "hardware": "h100", "tp": 8,
               "gru_impl": "torch", "device": "cpu", "weights_path": "w/{job}.pt", "dropout": 0.35,
               "val_split": 0.3, "lr": 0.00123, "val_traces": "1,3",
               "grid_file": str(ROOT / "docs" / "grid.example.toml")}
    if f.name in special:
        return special[f.name]
    if f.metadata["choices"]:
        return next(c for c in f.metadata["choices"] if c != f.default)
    if f.type == "bool":
        return not f.default
    if f.type == "int":
        return f.default + 3
    if f.type == "float":
        return f.default * 1.5
    return f"other-{f.name}"


def parser_for(launcher=False):
    parser = ArgumentParser("test")
    add_job_flags(parser, launcher=launcher)
    return parser


def test_the_command_line_rebuilds_every_field():
    settings = JobSettings(**{f.name: non_default(f) for f in dataclasses.fields(JobSettings)})
    parsed = settings_from_args(parser_for().parse_args(job_argv(settings)))
    assert parsed == settings


def test_defaults_survive_a_round_trip_and_only_result_settings_are_spelled_out():
    settings = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1)
    argv = job_argv(settings)
    flags = dict(zip(argv[::2], argv[1::2]))
    assert flags["--data_file"] == "x.npz" and flags["--lr"] == "0.0001" and flags["--num_layers"] == "2"
    # an unset optional setting (--val_traces) is no flag: "None" would read back as text
    assert set(flags) == {"--data_file", *(f"--{k}" for k in RESULT_KEYS if k not in ("hardware", "val_traces")),
                          "--hardware_accelerator"}
    assert settings_from_args(parser_for().parse_args(argv)) == settings


def test_every_field_has_a_flag_with_help():
    parser = parser_for()
    dests = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(JobSettings):
        assert f.name in dests, f"{f.name} has no flag"
        assert dests[f.name].help, f"--{f.name} has no help"


def test_the_launcher_passes_its_flags_through_to_every_job():
    launcher_flags = {a.dest for a in parser_for(launcher=True)._actions} - {"help"}
    grid_fields = {f.name for f in dataclasses.fields(JobSettings) if f.metadata["grid"]}
    assert launcher_flags == grid_fields
    # every grid field the user sets reaches the job's command, and parses back to the same value
    template = JobSettings(data_file="", model="llama-3-8b", hardware="a100", tp=1,
                           **{name: non_default(f) for f in dataclasses.fields(JobSettings)
                              if (name := f.name) in grid_fields})
    launch = LaunchSettings(data_dir="/data", output_dir="/out", job=template)
    cell = BUILT_IN.cells(["llama-3-70b"], ["h100"])[0]
    cmd = train_command(cell, launch)
    parsed = settings_from_args(parser_for().parse_args(cmd[3:]))
    assert parsed == job_settings(cell, launch)
    for name in grid_fields:
        assert getattr(parsed, name) == getattr(template, name)


def test_fingerprint_covers_every_setting_that_changes_results():
    base = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1)
    # the model's shape and regularisation were once missing: a stale result would be reused
    assert {"num_layers", "dropout", "hidden_size", "num_states", "lr", "num_epochs", "seed",
            "val_split"} <= set(RESULT_KEYS)
    for f in dataclasses.fields(JobSettings):
        changed = dataclasses.replace(base, **{f.name: non_default(f)})
        differs = fingerprint(changed, "sha", "fused") != fingerprint(base, "sha", "fused")
        if f.name == "gru_impl":
            continue        # the fingerprint records the resolved kernel, passed separately
        assert differs == f.metadata["affects_result"], f.name


def test_val_traces_joins_the_fingerprint_in_one_spelling_per_set_of_rows():
    base = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1)
    named = dataclasses.replace(base, val_traces="7, 3,3")
    assert named.val_traces == "3,7" and named.val_rows == (3, 7) and base.val_rows is None
    assert fingerprint(named, "sha", "fused")["val_traces"] == "3,7" != fingerprint(base, "sha", "fused")["val_traces"]
    assert fingerprint(named, "sha", "fused") == fingerprint(dataclasses.replace(base, val_traces="3,7"), "sha", "fused")
    assert parser_for(launcher=True).parse_args(["--val_traces", "7,3"]).val_traces == "7,3"   # the grid's flag


@pytest.mark.parametrize("value", ["", "a", "3;7", "-1", "3,,7", "1.5"])
def test_val_traces_that_are_not_row_numbers_name_the_flag(value):
    settings = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1, val_traces=value)
    with pytest.raises(InputError, match="--val_traces must be the data file's row numbers"):
        settings.validate()


def test_data_file_spelling_of_a_model_is_the_same_model():
    settings = JobSettings(data_file="x.npz", model="deepseek-r1-8b", hardware="a100", tp=1)
    assert settings.model == "deepseek-r1-distill-8b"
    assert [c.model for c in BUILT_IN.cells(["deepseek-r1-70b"])][0] == "deepseek-r1-distill-70b"


@pytest.mark.parametrize("field,value,message", [
    ("seed", -1, "--seed"), ("seed", 2**64, "--seed"), ("num_layers", 0, "--num_layers"),
    ("dropout", 1.0, "--dropout"), ("model", "llama-3-9b", "--model")])
def test_bad_settings_name_their_flag(field, value, message):
    settings = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1)
    with pytest.raises(InputError, match=message):
        dataclasses.replace(settings, **{field: value}).validate()


def test_a_data_file_named_for_another_configuration_is_refused():
    settings = JobSettings(data_file="/data/vllm-benchmark_llama-3-70b_h100.npz", model="llama-3-8b",
                           hardware="a100", tp=8)
    with pytest.raises(InputError, match="llama-3-70b on h100.*--model llama-3-8b"):
        settings.validate()
    dataclasses.replace(settings, model="llama-3-70b", hardware="h100").validate()     # agrees
    dataclasses.replace(settings, data_file="/data/my_measurements.npz").validate()    # not a grid name
