"""Every way of producing a power trace that the pipeline scores: ours and the baselines, in one
registry (docs/design.md, "Generation" and "Sites").

    for method in registered():           # in table order: ours first, then the baselines
        make = method.build(MethodContext(ckpt, sampling))
        watts = make(trace, seed)
    label("tdp")                          # "Nameplate (TDP)": the tables' name for it
    site_baselines()                      # the methods a site is also sized with (constant watts)

A method's name is the `method` column of the generation CSVs and the site metrics; its label
is what the LaTeX tables print. Scoring (model/generation/evaluate.py), the aggregator
(model/aggregate.py) and the site baselines (model/sites/) all read this registry, so a method
added here is scored, tabled and, as a site baseline, sized without touching them; a name the
registry does not know is an error wherever it turns up, never a silent drop.

This module imports no torch: the aggregator reads labels without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint
    from model.data import Trace

# (trace, seed) -> generated watts of the trace's length
Method = Callable[["Trace", int], np.ndarray]


@dataclass
class MethodContext:
    """What the methods of one checkpoint share: its generator and, per trace, the classifier's
    state probabilities (they do not depend on the seed, so they are computed once)."""
    ckpt: Checkpoint
    sampling: str
    _generator: object = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def generator(self):
        if self._generator is None:
            from model.generation.generator import Generator    # torch: only when generating
            self._generator = Generator(self.ckpt)
        return self._generator

    def probabilities(self, features: str, trace: Trace) -> np.ndarray:
        """Per-bin state probabilities of `trace`, the classifier fed the serving model's series
        of its recorded arrivals (`features="served"`) or its measured ones (`"measured"`)."""
        key = (features, trace.index)
        if key not in self._cache:
            from model.generation.generator import requests_of
            gen = self.generator
            workload = gen.workload(requests_of(trace), len(trace)) if features == "served" else trace.workload
            self._cache[key] = gen.probabilities(workload)
        return self._cache[key]

    def sample(self, probabilities: np.ndarray, seed: int, sampling: str | None = None) -> np.ndarray:
        from model.generation.generator import sample_trace
        return sample_trace(probabilities, self.ckpt, seed, sampling or self.sampling).watts


@dataclass(frozen=True)
class GenerationMethod:
    name: str                                     # the CSVs' `method` value
    label: str                                    # the tables' name
    build: Callable[[MethodContext], Method]      # how it generates, for one checkpoint
    description: str = ""
    # a site baseline is a constant load: one node's GPU watts under it, from the checkpoint
    site_baseline: bool = False
    constant_watts: Callable[[Checkpoint], float] | None = None


_REGISTRY: dict[str, GenerationMethod] = {}


def register(method: GenerationMethod) -> GenerationMethod:
    """Add a method (after those already registered, which sets its place in the tables)."""
    if not method.name or not method.label:
        raise ValueError(f"generation method {method.name!r} needs a name and a label")
    if method.name in _REGISTRY:
        raise ValueError(f"generation method {method.name!r} is registered twice")
    if method.site_baseline and method.constant_watts is None:
        raise ValueError(f"site baseline {method.name!r} needs constant_watts")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Take a method out again (tests that register a dummy one)."""
    del _REGISTRY[name]


def registered() -> list[GenerationMethod]:
    return list(_REGISTRY.values())


def method(name: str) -> GenerationMethod:
    """The registered method of that name; ValueError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown generation method {name!r} (known: {', '.join(_REGISTRY)}; "
                         "methods are registered in model/generation/methods.py)")
    return _REGISTRY[name]


def label(name: str) -> str:
    return method(name).label


def site_baselines() -> list[GenerationMethod]:
    return [m for m in _REGISTRY.values() if m.site_baseline]


def tdp_watts(ckpt: Checkpoint) -> float:
    """TP x the GPU's nameplate power: what a planner assumes without a model."""
    return float(ckpt.configuration["tp"] * ckpt.configuration["gpu_tdp_w"])


def mean_watts(ckpt: Checkpoint) -> float:
    return float(ckpt.training_watts["mean"])


def constant(watts: Callable[[Checkpoint], float]) -> Callable[[MethodContext], Method]:
    """A method that holds one value for the whole trace."""
    def build(ctx: MethodContext) -> Method:
        value = watts(ctx.ckpt)
        return lambda trace, seed: np.full(len(trace), value)
    return build


def _ours(ctx: MethodContext) -> Method:
    return lambda trace, seed: ctx.sample(ctx.probabilities("served", trace), seed)


def _marginal(ctx: MethodContext) -> Method:
    shares = np.asarray(ctx.ckpt.training_watts["state_shares"], dtype=np.float64)
    # i.i.d. per bin whatever the sampling: this baseline has no time structure by definition
    return lambda trace, seed: ctx.sample(np.tile(shares, (len(trace), 1)), seed, "independent")


def _measured_features(ctx: MethodContext) -> Method:
    return lambda trace, seed: ctx.sample(ctx.probabilities("measured", trace), seed)


register(GenerationMethod("ours", "Ours", _ours,
                          "the trace's arrivals through the serving model and the classifier"))
# nameplate is the GPU's rated board power, not the most it draws (model/nameplate.py): the label
# says nameplate, never maximum; the name `tdp` stays, as the CSVs' and site metrics' key
register(GenerationMethod("tdp", "Nameplate (TDP)", constant(tdp_watts), "constant TP x nameplate GPU power",
                          site_baseline=True, constant_watts=tdp_watts))
register(GenerationMethod("mean", "Mean", constant(mean_watts), "constant training mean",
                          site_baseline=True, constant_watts=mean_watts))
register(GenerationMethod("marginal", "Marginal", _marginal,
                          "i.i.d. draws from the training watts' per-state mixture"))
register(GenerationMethod("measured_features", "Measured features", _measured_features,
                          "the classifier fed the measured server-side series"))
