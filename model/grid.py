"""The grid of configurations: the one place it is defined (docs/design.md, "The grid").

Every script imports the grid from here: model keys, data file names, TP values, hardware and
its nameplate power, table labels and job names. Built in: the 16 jobs of the measurement
campaign; `--grid FILE` (TOML or JSON, docs/grid.example.toml) puts another in its place.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from model.errors import InputError, refuse_special_file, strict_json


@dataclass(frozen=True)
class ModelSpec:
    key: str            # value of --model
    file_stem: str      # the LLM part of the data file name
    tp_values: tuple[int, ...]
    table_label: str    # LaTeX label in the paper's table
    size_b: float | None = None   # billions of parameters, for the demo's simulated LLM (None: from the key)

    @property
    def display_name(self) -> str:
        """The table label without LaTeX markup, for figures."""
        return self.table_label.removeprefix(r"\texttt{").removesuffix("}")


# The table labels follow the published table ("Llama-3.1 (8B)"); the demo and the README call
# the models Llama-3. If your measurements are of Llama-3, change the label here (or give a grid
# file, below): it is the only place a model's name in the table and figures comes from.
DEFAULT_MODELS = (
    ModelSpec("llama-3-8b", "llama-3-8b", (1, 2), r"\texttt{Llama-3.1 (8B)}"),
    ModelSpec("llama-3-70b", "llama-3-70b", (4, 8), r"\texttt{Llama-3.1 (70B)}"),
    ModelSpec("deepseek-r1-distill-8b", "deepseek-r1-8b", (1, 2), r"\texttt{DeepSeek-Distill (8B)}"),
    ModelSpec("deepseek-r1-distill-70b", "deepseek-r1-70b", (4, 8), r"\texttt{DeepSeek-Distill (70B)}"),
)
# Nameplate board power per GPU (SXM parts), the "TDP" baseline of generated traces.
DEFAULT_GPU_TDP_W = {"a100": 400.0, "h100": 700.0}

# The grid in use. These are filled in place by use_grid(), so that every module that imported
# them sees a grid file's models and hardware; nothing else may change them.
MODELS: list[ModelSpec] = []
HARDWARE: list[str] = []
GPU_TDP_W: dict[str, float] = {}
MODEL_KEYS: list[str] = []
MODELS_BY_KEY: dict[str, ModelSpec] = {}
# The data files spell two models differently from the flags; both name the same model.
MODEL_ALIASES: dict[str, str] = {}
GRID_ENV = "POWERTRACE_GRID"     # a grid file's path, for commands started by a command


def _install(models, gpu_tdp_w: dict[str, float]) -> None:
    MODELS[:] = models
    HARDWARE[:] = list(gpu_tdp_w)
    GPU_TDP_W.clear()
    GPU_TDP_W.update(gpu_tdp_w)
    MODEL_KEYS[:] = [m.key for m in models]
    MODELS_BY_KEY.clear()
    MODELS_BY_KEY.update({m.key: m for m in models})
    MODEL_ALIASES.clear()
    MODEL_ALIASES.update({m.file_stem: m.key for m in models if m.file_stem != m.key})


# names become file names: always checked with fullmatch (`$` would let a trailing newline by)
_NAME_TEXT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(_NAME_TEXT)
_JOB_NAME = re.compile(rf"{_NAME_TEXT}_{_NAME_TEXT}_tp[1-9][0-9]*")


def is_job_name(name) -> bool:
    """Whether `name` is shaped like job_name(): model, hardware and TP, no path in it."""
    return isinstance(name, str) and _JOB_NAME.fullmatch(name) is not None


# LaTeX's special characters as text: a label is printed, never run (`\input`, `~`, `^`, ...)
_LATEX_TEXT = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               **{c: "\\" + c for c in "&%$#_{}"}}


def latex_text(text: str) -> str:
    """`text` as literal LaTeX text on one line: special characters escaped, line breaks and
    other control characters made spaces."""
    text = re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text)
    return re.sub(r"[\\~^&%$#_{}]", lambda m: _LATEX_TEXT[m.group()], text)


def read_grid_file(path: Path | str) -> tuple[list[ModelSpec], dict[str, float]]:
    """The models and hardware of a grid file (TOML or JSON, see docs/grid.example.toml)."""
    path = Path(path)
    refuse_special_file(path, "grid file")
    try:
        text = path.read_text()
        data = strict_json(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"{path}: not a readable grid file ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a grid file holds an object of [[models]] and [hardware], not a "
                         f"{type(data).__name__}")
    if not isinstance(data.get("models"), list) or not data["models"] or not isinstance(data.get("hardware"), dict) \
            or not data["hardware"]:
        raise InputError(f"{path}: a grid file needs a list of [[models]] and a [hardware] table of TDP watts")
    models = []
    for i, entry in enumerate(data["models"]):
        where = f"{path}: model {i + 1}"
        if not isinstance(entry, dict) or not {"key", "tp", "label"} <= set(entry):
            raise InputError(f"{where}: needs key, tp and label (file_stem and size_b are optional)")
        key, stem = str(entry["key"]), str(entry.get("file_stem", entry["key"]))
        if not _NAME.fullmatch(key) or not _NAME.fullmatch(stem):
            raise InputError(f"{where}: key and file_stem may hold letters, digits, '.', '-' and '_' only")
        tp = entry["tp"]
        if not isinstance(tp, list) or not tp or any(not isinstance(t, int) or isinstance(t, bool) or t < 1
                                                      for t in tp) or len(set(tp)) != len(tp):
            raise InputError(f"{where} ({key}): tp must be a list of distinct positive integers")
        label = latex_text(str(entry["label"]))
        size_b = entry.get("size_b")
        if size_b is not None and (isinstance(size_b, bool) or not isinstance(size_b, (int, float)) or size_b <= 0):
            raise InputError(f"{where} ({key}): size_b must be a positive number of billions of parameters")
        models.append(ModelSpec(key, stem, tuple(tp), "\\texttt{" + label + "}",
                                None if size_b is None else float(size_b)))
    keys = [m.key for m in models] + [m.file_stem for m in models if m.file_stem != m.key]
    if len(set(keys)) != len(keys):
        raise InputError(f"{path}: a model key or file_stem appears twice")
    tdp = {}
    for name, watts in data["hardware"].items():
        if not _NAME.fullmatch(str(name)) or isinstance(watts, bool) or not isinstance(watts, (int, float)) \
                or not math.isfinite(watts) or watts <= 0:
            raise InputError(f"{path}: hardware {name!r} needs a positive TDP in watts (a finite number), e.g. h200 = 700")
        tdp[str(name)] = float(watts)
    return models, tdp


def use_grid(path: Path | str | None) -> None:
    """Make a grid file's models and hardware the grid (None: the built-in one), for this
    process and (through POWERTRACE_GRID) the commands it starts."""
    if path is None:
        _install(list(DEFAULT_MODELS), dict(DEFAULT_GPU_TDP_W))
        os.environ.pop(GRID_ENV, None)
        return
    _install(*read_grid_file(path))
    os.environ[GRID_ENV] = str(Path(path).resolve())


def grid_from_argv(argv: list[str]) -> None:
    """Apply `--grid FILE` before any parser is built, so that flags' choices follow it."""
    for i, arg in enumerate(argv):
        if arg == "--grid" and i + 1 < len(argv):
            use_grid(argv[i + 1])
        elif arg.startswith("--grid="):
            use_grid(arg.split("=", 1)[1])


def grid_argv() -> list[str]:
    """`--grid FILE` for a command this one starts or suggests, when a grid file is in use."""
    return ["--grid", os.environ[GRID_ENV]] if os.environ.get(GRID_ENV) else []


def add_grid_flag(parser) -> None:
    parser.add_argument("--grid", default=None, metavar="FILE",
                        help="models (with table labels), hardware (with TDP watts) and TP sizes, as "
                             "TOML or JSON (docs/grid.example.toml); default: the built-in 16-job grid")


_install(list(DEFAULT_MODELS), dict(DEFAULT_GPU_TDP_W))
if os.environ.get(GRID_ENV):           # started by a command that was given --grid
    try:
        _install(*read_grid_file(os.environ[GRID_ENV]))
    except InputError as err:          # before any command's run_cli: say it as run_cli would
        print(f"error: {GRID_ENV}: {err}", file=sys.stderr)
        sys.exit(2)


def canonical_model(name: str) -> str | None:
    """The grid key of a model given by its key or its data-file spelling; None if unknown."""
    return name if name in MODELS_BY_KEY else MODEL_ALIASES.get(name)


def data_file_name(model: str, hardware: str) -> str:
    """Name of the data file holding every TP of one LLM on one GPU type."""
    return f"vllm-benchmark_{MODELS_BY_KEY[model].file_stem}_{hardware}.npz"


def cell_of_data_file(name: str) -> tuple[str, str] | None:
    """(model key, hardware) that a file named like the grid's data files holds; None for any
    other name."""
    for spec in MODELS:
        for hw in HARDWARE:
            if name == data_file_name(spec.key, hw):
                return spec.key, hw
    return None


def job_name(model: str, hardware: str, tp: int) -> str:
    return f"{model}_{hardware}_tp{tp}"


@dataclass(frozen=True)
class GridCell:
    """One cell of the grid: one training job."""
    model: str
    hardware: str
    tp: int

    @property
    def job_name(self) -> str:
        return job_name(self.model, self.hardware, self.tp)

    @property
    def data_file_name(self) -> str:
        return data_file_name(self.model, self.hardware)

    def data_file(self, data_dir: Path | str) -> Path:
        return Path(data_dir) / self.data_file_name


def grid(models: list[str] | None = None, hardware: list[str] | None = None) -> list[GridCell]:
    """The grid in its canonical order (model, hardware, TP), optionally filtered.

    Models may be given by key or data-file spelling. Raises InputError naming the unknown
    entry when a filter holds a typo.
    """
    unknown = [m for m in models or [] if canonical_model(m) is None]
    if unknown:
        raise InputError(f"unknown model {unknown[0]!r}; known models: {', '.join(MODEL_KEYS)}")
    unknown = [h for h in hardware or [] if h not in HARDWARE]
    if unknown:
        raise InputError(f"unknown hardware {unknown[0]!r}; known hardware: {', '.join(HARDWARE)}")
    models = [canonical_model(m) for m in models or []]
    return [
        GridCell(m.key, hw, tp)
        for m in MODELS if not models or m.key in models
        for hw in HARDWARE if not hardware or hw in hardware
        for tp in m.tp_values
    ]


def cells_by_job_name() -> dict[str, GridCell]:
    return {c.job_name: c for c in grid()}
