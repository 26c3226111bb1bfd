"""The grid of configurations: the one place it is defined (docs/design.md, "The grid").

A Grid holds model keys, data file names, TP values, hardware and its nameplate power, table
labels and job names; it is a value, passed to whatever needs it. Built in (BUILT_IN): the 16
jobs of the measurement campaign; `--grid FILE` (TOML or JSON, docs/grid.example.toml) names
another, which a command reads with grid_of_argv before building its parser and passes on to
the commands it starts with Grid.argv().
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from model.errors import InputError, read_structured, strict_json
from model.latex import latex_text


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

# names become file names: always checked with fullmatch (`$` would let a trailing newline by)
_NAME_TEXT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(_NAME_TEXT)
_JOB_NAME = re.compile(rf"{_NAME_TEXT}_{_NAME_TEXT}_tp[1-9][0-9]*")


def is_job_name(name) -> bool:
    """Whether `name` is shaped like job_name(): model, hardware and TP, no path in it."""
    return isinstance(name, str) and _JOB_NAME.fullmatch(name) is not None


def read_grid_file(path: Path | str) -> Grid:
    """The grid a file describes (TOML or JSON, see docs/grid.example.toml)."""
    path = Path(path)
    data = read_structured(path, "grid file", strict_json if path.suffix == ".json" else tomllib.loads)
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
    return Grid(tuple(models), tuple(tdp.items()), str(path.resolve()))


GRID_HELP = ("models (with table labels), hardware (with TDP watts) and TP sizes, as TOML or JSON "
             "(docs/grid.example.toml); default: the built-in 16-job grid")


def add_grid_flag(parser) -> None:
    """--grid FILE, for commands whose settings are not JobSettings (which has it as a field)."""
    parser.add_argument("--grid", default=None, metavar="FILE", help=GRID_HELP)


def job_name(model: str, hardware: str, tp: int) -> str:
    return f"{model}_{hardware}_tp{tp}"


@dataclass(frozen=True)
class GridCell:
    """One cell of the grid: one training job."""
    model: str
    hardware: str
    tp: int
    file_stem: str | None = field(default=None, compare=False)   # the LLM in data file names (None: model)

    @property
    def job_name(self) -> str:
        return job_name(self.model, self.hardware, self.tp)

    @property
    def data_file_name(self) -> str:
        """Name of the data file holding every TP of this cell's LLM on its GPU type."""
        return f"vllm-benchmark_{self.file_stem or self.model}_{self.hardware}.npz"

    def data_file(self, data_dir: Path | str) -> Path:
        return Path(data_dir) / self.data_file_name


@dataclass(frozen=True)
class Grid:
    """Models (with TP sizes and table labels) and hardware (with nameplate watts): a value,
    passed to whatever needs it. `file`: the grid file it was read from, None for the built-in
    grid; commands this one starts get it back through argv()."""
    models: tuple[ModelSpec, ...]
    gpu_tdp: tuple[tuple[str, float], ...]
    file: str | None = None

    @property
    def hardware(self) -> list[str]:
        return [hw for hw, _ in self.gpu_tdp]

    @property
    def gpu_tdp_w(self) -> dict[str, float]:
        """Nameplate board power per GPU type (the "TDP" baseline of generated traces)."""
        return dict(self.gpu_tdp)

    @property
    def model_keys(self) -> list[str]:
        return [m.key for m in self.models]

    @property
    def models_by_key(self) -> dict[str, ModelSpec]:
        return {m.key: m for m in self.models}

    def canonical_model(self, name: str) -> str | None:
        """The key of a model given by its key or its data-file spelling (the data files spell
        two built-in models differently from the flags); None if unknown."""
        for m in self.models:
            if name in (m.key, m.file_stem):
                return m.key
        return None

    def data_file_name(self, model: str, hardware: str) -> str:
        """Name of the data file holding every TP of one LLM on one GPU type."""
        return GridCell(model, hardware, 0, self.models_by_key[model].file_stem).data_file_name

    def cell_of_data_file(self, name: str) -> tuple[str, str] | None:
        """(model key, hardware) that a file named like the grid's data files holds; None for
        any other name."""
        for spec in self.models:
            for hw in self.hardware:
                if name == self.data_file_name(spec.key, hw):
                    return spec.key, hw
        return None

    def cells(self, models: list[str] | None = None, hardware: list[str] | None = None) -> list[GridCell]:
        """The cells in canonical order (model, hardware, TP), optionally filtered. Models may be
        given by key or data-file spelling; raises InputError naming an unknown entry."""
        unknown = [m for m in models or [] if self.canonical_model(m) is None]
        if unknown:
            raise InputError(f"unknown model {unknown[0]!r}; known models: {', '.join(self.model_keys)}")
        unknown = [h for h in hardware or [] if h not in self.hardware]
        if unknown:
            raise InputError(f"unknown hardware {unknown[0]!r}; known hardware: {', '.join(self.hardware)}")
        models = [self.canonical_model(m) for m in models or []]
        return [GridCell(m.key, hw, tp, m.file_stem)
                for m in self.models if not models or m.key in models
                for hw in self.hardware if not hardware or hw in hardware
                for tp in m.tp_values]

    def cells_by_job_name(self) -> dict[str, GridCell]:
        return {c.job_name: c for c in self.cells()}

    def argv(self) -> list[str]:
        """`--grid FILE` for a command this one starts or suggests (nothing for the built-in grid)."""
        return ["--grid", self.file] if self.file else []


BUILT_IN = Grid(DEFAULT_MODELS, tuple(DEFAULT_GPU_TDP_W.items()))


def load_grid(path: str | Path | None = None) -> Grid:
    """The grid of a --grid value: the built-in one for None, else the file's (read once per
    process while the file is unchanged)."""
    if path is None:
        return BUILT_IN
    try:
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        stamp = None            # read_grid_file says what is wrong with it
    return _read_grid_once(str(path), stamp)


@functools.lru_cache(maxsize=8)
def _read_grid_once(path: str, stamp: tuple[int, int] | None) -> Grid:
    return read_grid_file(path)


def grid_of_argv(argv: list[str]) -> Grid:
    """The grid a command line names with --grid FILE (the built-in one without it). Read before
    a command's parser is built, since flags' choices and help come from the grid."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--grid", default=None)
    known, _ = pre.parse_known_args(argv)
    return load_grid(known.grid)
