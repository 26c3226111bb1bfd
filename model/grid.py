"""The 16-configuration grid: the one place it is defined (docs/design.md, "The grid").

Every script imports the grid from here: model keys, data file names, TP values,
hardware and its nameplate power, table labels and job names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    key: str            # value of --model
    file_stem: str      # the LLM part of the data file name
    tp_values: tuple[int, ...]
    table_label: str    # LaTeX label in the paper's table

    @property
    def display_name(self) -> str:
        """The table label without LaTeX markup, for figures."""
        return self.table_label.removeprefix(r"\texttt{").removesuffix("}")


# The table labels follow the published table ("Llama-3.1 (8B)"); the demo and the README call
# the models Llama-3. If your measurements are of Llama-3, change the label here: it is the only
# place a model's name in the table, the figures and the statistics comes from.
MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("llama-3-8b", "llama-3-8b", (1, 2), r"\texttt{Llama-3.1 (8B)}"),
    ModelSpec("llama-3-70b", "llama-3-70b", (4, 8), r"\texttt{Llama-3.1 (70B)}"),
    ModelSpec("deepseek-r1-distill-8b", "deepseek-r1-8b", (1, 2), r"\texttt{DeepSeek-Distill (8B)}"),
    ModelSpec("deepseek-r1-distill-70b", "deepseek-r1-70b", (4, 8), r"\texttt{DeepSeek-Distill (70B)}"),
)
HARDWARE: tuple[str, ...] = ("a100", "h100")
# Nameplate board power per GPU (SXM parts), the "TDP" baseline of generated traces.
GPU_TDP_W: dict[str, float] = {"a100": 400.0, "h100": 700.0}

MODEL_KEYS: tuple[str, ...] = tuple(m.key for m in MODELS)
MODELS_BY_KEY: dict[str, ModelSpec] = {m.key: m for m in MODELS}
# The data files spell two models differently from the flags; both name the same model.
MODEL_ALIASES: dict[str, str] = {m.file_stem: m.key for m in MODELS if m.file_stem != m.key}


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
