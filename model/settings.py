"""Every setting of a training job, in one dataclass whose fields make everything else.

    settings = JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1, lr=3e-3)
    argv = job_argv(settings)                 # the train_entry command line of that job
    parser = ArgumentParser(...); add_job_flags(parser)        # train_entry's flags
    fingerprint(settings, data_sha256, gru_impl)               # what --skip_existing compares

Adding a hyperparameter is one field below: its default, its help, and whether it changes the
result (`affects_result`, so it joins the fingerprint) and whether the grid launcher passes it
to every job (`grid`, so run_all_training.py gets the same flag). tests/test_settings.py checks
that the flags, the command line and the fingerprint agree with the fields.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from model import config
from model.errors import InputError
from model.grid import GRID_HELP, Grid, job_name, load_grid


def setting(default=dataclasses.MISSING, help: str = "", *, flag: str | None = None,
            affects_result: bool = False, grid: bool = False, per_job: bool = False,
            negated_flag: str | None = None, choices: tuple | None = None, metavar: str | None = None,
            deprecated: str | None = None, group: str | None = None, cli: bool = True):
    """A dataclass field carrying what its command-line flag needs (JobSettings here, the other
    commands' settings in model/command_settings.py).

    flag: the flag's name when it is not --<field name>; negated_flag: a store_true flag that
    sets a True-by-default field to False (--no_wandb); per_job: the launcher fills it in per
    grid cell (data file, model, TP) rather than offering a flag; deprecated: an old spelling
    that still works, with one note; group: the parser group it joins ('slurm'); cli=False: a
    field filled from other flags.
    """
    metadata = {"help": help, "flag": flag, "affects_result": affects_result, "grid": grid,
                "per_job": per_job, "negated_flag": negated_flag, "choices": choices, "metavar": metavar,
                "deprecated": deprecated, "group": group, "cli": cli}
    if default is not dataclasses.MISSING and type(default).__hash__ is None:   # a list, a dataclass
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_seed(seed: int) -> None:
    """The one seed range of every command."""
    if not 0 <= seed <= config.MAX_SEED:
        raise InputError(f"--seed must lie in 0..2**32-1, got {seed}")     # config.MAX_SEED


@dataclass
class JobSettings:
    # what to train: one cell of the grid
    data_file: str = setting(help="the .npz file holding this LLM/GPU's traces", per_job=True)
    model: str = setting(help="model key of the grid (data-file spellings are accepted)",
                         affects_result=True, per_job=True)
    hardware: str = setting(help="GPU type of the grid", flag="--hardware_accelerator", affects_result=True,
                            per_job=True)
    tp: int = setting(help="tensor-parallel size to train; -1 for every TP in the file",
                      affects_result=True, per_job=True)
    grid_file: str | None = setting(None, GRID_HELP, flag="--grid", metavar="FILE", grid=True)
    # the model and its training (docs/design.md, "Training")
    lr: float = setting(config.LR, "Adam learning rate", affects_result=True, grid=True)
    num_epochs: int = setting(config.NUM_EPOCHS, "training epochs", affects_result=True, grid=True)
    hidden_size: int = setting(config.HIDDEN_SIZE, "GRU hidden units per direction",
                               affects_result=True, grid=True)
    num_layers: int = setting(config.NUM_LAYERS, "stacked GRU layers", affects_result=True, grid=True)
    dropout: float = setting(config.DROPOUT, "dropout between GRU layers while training",
                             affects_result=True, grid=True)
    num_states: int = setting(config.NUM_STATES, "power states (k-means clusters)",
                              affects_result=True, grid=True)
    val_split: float = setting(config.VAL_SPLIT, "share of a TP's traces held out for validation",
                               affects_result=True, grid=True)
    val_traces: str | None = setting(None, "rows of the data file to validate on, e.g. 3,7, instead of "
                                           "--val_split's seeded draw (leave-one-traffic-out studies)",
                                     affects_result=True, grid=True)
    seed: int = setting(config.SEED, "seed of the split, the weights, the shuffling and the sampling",
                        affects_result=True, grid=True)
    gru_impl: str = setting("auto", "auto: fused C++ kernel on CPU, cuDNN nn.GRU on CUDA",
                            affects_result=True, grid=True, choices=config.GRU_IMPLS)
    calibration: str = setting(config.CALIBRATION, "temperature: scale the classifier's logits by one "
                                                   "temperature fitted on the last "
                                                   f"{config.CALIBRATION_SHARE:g} of each training trace's bins, "
                                                   "which the weights then do not train on; none: no scaling",
                               affects_result=True, grid=True, choices=config.CALIBRATIONS)
    # how and where it runs; none of these changes a number
    device: str = setting("auto", "cpu, cuda, cuda:1, ... (auto: cuda if available)", grid=True)
    output_dir: str = setting(str(config.RESULTS_DIR), "results folder")
    weights_path: str | None = setting(None, "checkpoint file (default OUTPUT_DIR/checkpoints/{job}.pt); "
                                             "'{job}' is replaced")
    use_wandb: bool = setting(True, "do not log to Weights & Biases", negated_flag="--no_wandb", grid=True)
    val_every: int = setting(config.VAL_EVERY, "validation loss every N epochs", grid=True)
    checkpoint_every: int = setting(config.CHECKPOINT_EVERY,
                                    "save the training state every N epochs for --resume", grid=True)
    resume: bool = setting(False, "continue from a saved training state", per_job=True)
    progress: bool = setting(True, "no progress bar", negated_flag="--no_progress")

    def __post_init__(self):
        if self.grid_file is not None:       # the jobs a launcher starts may run elsewhere
            self.grid_file = str(Path(self.grid_file).resolve())
        self.model = self.grid.canonical_model(self.model) or self.model
        rows = parse_rows(self.val_traces)
        if rows:          # one spelling per set of rows: "7,3" and "3, 7" are the same experiment
            self.val_traces = ",".join(map(str, rows))

    @property
    def val_rows(self) -> tuple[int, ...] | None:
        """The rows --val_traces names (sorted), or None for the seeded split."""
        return parse_rows(self.val_traces) if self.val_traces is not None else None

    @property
    def grid(self) -> Grid:
        """The grid --grid names (read once per process), the built-in one without it."""
        return load_grid(self.grid_file)

    @property
    def job_name(self) -> str:
        return job_name(self.model, self.hardware, self.tp)

    def validate(self) -> None:
        grid = self.grid
        if self.model not in grid.models_by_key:
            raise InputError(f"--model {self.model!r} is not a model of the grid; known: "
                             f"{', '.join(grid.model_keys)}")
        if self.hardware not in grid.hardware:
            raise InputError(f"--hardware_accelerator {self.hardware!r}: known: {', '.join(grid.hardware)}")
        named = grid.cell_of_data_file(Path(self.data_file).name)
        if named and named != (self.model, self.hardware):
            raise InputError(f"{self.data_file}: its name says {named[0]} on {named[1]}, but the flags say "
                             f"--model {self.model} --hardware_accelerator {self.hardware}; results would be "
                             "filed under the wrong configuration")
        checks = [(self.lr > 0 and np.isfinite(self.lr), f"--lr must be positive, got {self.lr}"),
                  (self.num_epochs >= 1, f"--num_epochs must be at least 1, got {self.num_epochs}"),
                  (0 < self.val_split < 1, f"--val_split must lie in (0, 1), got {self.val_split}"),
                  (self.hidden_size >= 1, f"--hidden_size must be at least 1, got {self.hidden_size}"),
                  (self.num_layers >= 1, f"--num_layers must be at least 1, got {self.num_layers}"),
                  (0 <= self.dropout < 1, f"--dropout must lie in [0, 1), got {self.dropout}"),
                  (self.num_states >= 2, f"--num_states must be at least 2, got {self.num_states}"),
                  (self.val_every >= 1, f"--val_every must be at least 1, got {self.val_every}"),
                  (self.checkpoint_every >= 1,
                   f"--checkpoint_every must be at least 1, got {self.checkpoint_every}"),
                  (self.gru_impl in config.GRU_IMPLS, f"--gru_impl must be one of {', '.join(config.GRU_IMPLS)}"),
                  (self.calibration in config.CALIBRATIONS,
                   f"--calibration must be one of {', '.join(config.CALIBRATIONS)}, got {self.calibration!r}"),
                  (self.val_traces is None or parse_rows(self.val_traces) is not None,
                   f"--val_traces must be the data file's row numbers separated by commas (e.g. 3,7), "
                   f"got {self.val_traces!r}")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        check_seed(self.seed)


def parse_rows(text: str | None) -> tuple[int, ...] | None:
    """'7, 3,3' -> (3, 7): row numbers (0 or more) separated by commas; None when `text` is not
    that (or is None, or names no row)."""
    if not isinstance(text, str):
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return tuple(sorted({int(p) for p in parts}))


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata["negated_flag"] or f.metadata["flag"] or f"--{f.name}"


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


class _DeprecatedSpelling(argparse.Action):
    """An old flag name that still works for one release, saying once what replaces it."""

    def __init__(self, *args, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is deprecated and will be removed; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_flag(parser, old: str, new: str, dest: str) -> None:
    """`old` as a spelling of `new` (stored in `dest`) that still works, with one note."""
    parser.add_argument(old, dest=dest, action=_DeprecatedSpelling, new_flag=new,
                        help=f"deprecated spelling of {new}")


_TYPES = {"int": int, "float": float, "str": str}


def add_field_flag(target, f: dataclasses.Field, default=dataclasses.MISSING) -> None:
    """The flag of one settings field, its parsed value stored under the field's name.

    A bool flips its default (--no_wandb sets a True field to False); a list[str] field is a
    repeatable flag; `default` overrides the field's in the parser, while the help still shows
    the field's own (the launcher's demo)."""
    meta = f.metadata
    own = _default(f)
    default = own if default is dataclasses.MISSING else default
    if f.type == "bool":
        target.add_argument(flag_name(f), dest=f.name, action="store_false" if own else "store_true",
                            default=default, help=meta["help"])
        return
    kwargs = {k: meta[k] for k in ("choices", "metavar") if meta[k] is not None}
    if f.type == "list[str]":
        kwargs |= {"action": "append", "default": default}
        shown = ""
    else:
        required = default is dataclasses.MISSING
        shown = "" if required or default == own else f" (default: {own})"
        kwargs |= {"type": _TYPES[f.type.removesuffix(" | None")], "required": required,
                   "default": None if required else default}
    target.add_argument(flag_name(f), dest=f.name, help=meta["help"] + shown, **kwargs)
    if meta["deprecated"]:
        add_deprecated_flag(target, meta["deprecated"], flag_name(f), f.name)


def add_job_flags(parser: argparse.ArgumentParser, launcher: bool = False,
                  defaults: dict | None = None) -> None:
    """One flag per field: every field for train_entry, the `grid` fields for the launcher.

    `defaults` overrides a field's default in the parser and its help (the launcher's demo).
    The parsed value of a field is stored under the field's name.
    """
    defaults = defaults or {}
    for f in fields(JobSettings):
        if not launcher or f.metadata["grid"]:
            add_field_flag(parser, f, defaults.get(f.name, dataclasses.MISSING))


def settings_from_args(args: argparse.Namespace, **overrides) -> JobSettings:
    """The JobSettings of parsed flags (fields the parser did not have keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(JobSettings) if hasattr(args, f.name)}
    return JobSettings(**(values | overrides))


def settings_argv(settings, always: bool = False) -> list[str]:
    """The flags that rebuild `settings` (any settings dataclass made of `setting` fields): each
    field that differs from its default, and with `always` every field that changes results too."""
    argv: list[str] = []
    for f in fields(settings):
        value, default = getattr(settings, f.name), _default(f)
        if not f.metadata["cli"]:
            continue
        if f.type == "bool":
            if value != default:          # its flag flips the default
                argv.append(flag_name(f))
        elif value is None:
            continue          # an unset optional setting (its default): no flag spells None
        elif f.type == "list[str]":
            argv += [part for item in value for part in (flag_name(f), item)]
        elif (always and f.metadata["affects_result"]) or default is dataclasses.MISSING or value != default:
            argv += [flag_name(f), repr(value) if isinstance(value, float) else str(value)]
    return argv


def job_argv(settings: JobSettings) -> list[str]:
    """The train_entry arguments that rebuild `settings`: every field that changes results, so
    a job's log shows all of them, and the others where they differ from their defaults."""
    return settings_argv(settings, always=True)


RESULT_KEYS = tuple(f.name for f in fields(JobSettings) if f.metadata["affects_result"])


def fingerprint(settings: JobSettings, data_sha256: str, gru_impl: str) -> dict:
    """Every setting that changes a job's numbers, with the kernel that `auto` resolves to and
    the data file's digest: a finished job is reused only when all of them match."""
    values = asdict(settings) | {"gru_impl": gru_impl}
    return {key: values[key] for key in RESULT_KEYS} | {"data_sha256": data_sha256}
