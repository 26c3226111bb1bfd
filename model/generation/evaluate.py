"""Generated traces against measured ones the model never saw, next to simple baselines.

    scores = score_generation(ckpt, traces, seeds=5)
    scores.summary          # one row per method: the medians over seeds, then over traces
    scores.per_trace        # one row per (trace, method): the median over seeds

For each measured trace its recorded arrivals are replayed through the serving model and the
generator (`ours`); the measured server-side series and watts are never shown to it. The
baselines beside it are those of model/generation/methods.py: `tdp` (constant TP x nameplate
GPU power), `mean` (constant training mean), `marginal` (i.i.d. draws from the training watts'
per-state mixture: the right distribution with no time structure) and `measured_features` (the
classifier fed the measured server-side series: the ceiling that shows what the serving model
costs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model import config
from model.checkpoint import Checkpoint
from model.data import Trace
from model.generation.fidelity import EXTRA_METRICS, FIDELITY_METRICS, fidelity
from model.generation.methods import Method, MethodContext, registered

GENERATION_COLUMNS = ("method",) + FIDELITY_METRICS
SCORED = FIDELITY_METRICS + EXTRA_METRICS


@dataclass
class GenerationScores:
    per_trace: pd.DataFrame    # trace, method, then the SCORED metrics (median over seeds)
    summary: pd.DataFrame      # method, then the SCORED metrics (median over traces)

    def summary_rows(self) -> list[list]:
        return [[row["method"], *(repr(float(row[m])) for m in FIDELITY_METRICS)]
                for _, row in self.summary.iterrows()]


def trace_seed(base_seed: int, seed_index: int, trace: Trace) -> int:
    """Each (seed, trace) pair its own reproducible stream."""
    return int(np.random.SeedSequence([base_seed, seed_index, trace.index]).generate_state(1)[0])


def standard_methods(ckpt: Checkpoint, sampling: str) -> dict[str, Method]:
    """Every registered method (model/generation/methods.py) for one checkpoint: name -> method."""
    ctx = MethodContext(ckpt, sampling)
    return {m.name: m.build(ctx) for m in registered()}


def score_methods(traces: list[Trace], methods: dict[str, Method], seeds: int,
                  base_seed: int = 0) -> GenerationScores:
    """Every method on every trace and seed; median over seeds, then over traces.

    A NaN (a metric undefined on a trace) is left out of the medians.
    """
    rows = []
    for trace in traces:
        for name, method in methods.items():
            per_seed = [fidelity(trace.power, method(trace, trace_seed(base_seed, s, trace)))
                        for s in range(seeds)]
            rows.append({"trace": trace.index, "method": name,
                         **{m: float(np.nanmedian([r[m] for r in per_seed]))
                            if not all(np.isnan(r[m]) for r in per_seed) else float("nan")
                            for m in SCORED}})
    per_trace = pd.DataFrame(rows, columns=["trace", "method", *SCORED])
    summary = per_trace.groupby("method", sort=False)[list(SCORED)].median().reset_index()
    return GenerationScores(per_trace, summary)


def score_generation(ckpt: Checkpoint, traces: list[Trace], seeds: int = 5, base_seed: int = 0,
                     sampling: str | None = None) -> GenerationScores:
    """`ours` and the baselines on measured traces; `sampling` defaults to the checkpoint's."""
    return score_methods(traces, standard_methods(ckpt, sampling or config.GENERATION_SAMPLING),
                         seeds, base_seed)
