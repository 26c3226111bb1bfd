"""Which node sits where, which configuration it runs, and which requests it serves.

    layout = Layout(rows=10, racks_per_row=6, nodes_per_rack=4)
    configs = assign_configs(layout, {"llama-3-70b_h100_tp4": 1.0}, seed=0)   # one job per rack
    per_node = split_requests(requests, layout.n_nodes, seed=0)

Node n is in rack n // nodes_per_rack; rack r is in row r // racks_per_row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.errors import InputError, refuse_special_file
from model.generation.generator import Requests


@dataclass(frozen=True)
class Layout:
    rows: int
    racks_per_row: int
    nodes_per_rack: int

    def __post_init__(self):
        for name in ("rows", "racks_per_row", "nodes_per_rack"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, got {getattr(self, name)}")

    @property
    def n_racks(self) -> int:
        return self.rows * self.racks_per_row

    @property
    def n_nodes(self) -> int:
        return self.n_racks * self.nodes_per_rack

    def nodes_of_rack(self, rack: int) -> range:
        return range(rack * self.nodes_per_rack, (rack + 1) * self.nodes_per_rack)


def parse_mix(items: list[str]) -> dict[str, float]:
    """`--config A` (the whole site) or `--config A:0.5 --config B:0.5` -> {job: share}."""
    if not items:
        raise InputError("--config is required: a job name such as llama-3-70b_h100_tp4")
    if len(items) == 1 and ":" not in items[0]:
        return {items[0]: 1.0}
    mix: dict[str, float] = {}
    for item in items:
        name, _, share = item.rpartition(":")
        try:
            value = float(share)
        except ValueError:
            raise InputError(f"--config {item!r}: expected JOB:SHARE, e.g. llama-3-70b_h100_tp4:0.5") from None
        if not name or not value > 0 or name in mix:
            raise InputError(f"--config {item!r}: expected a job not given before and a positive share")
        mix[name] = value
    if abs(sum(mix.values()) - 1.0) > 1e-6:
        raise InputError(f"--config shares sum to {sum(mix.values()):g}, not 1")
    return mix


def assign_configs(layout: Layout, mix: dict[str, float], seed: int) -> list[str]:
    """One configuration per rack (a rack's nodes are bought alike): counts by largest
    remainder of share x racks, placed in a seeded random order."""
    names = list(mix)
    exact = np.array([mix[n] for n in names]) * layout.n_racks
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: layout.n_racks - counts.sum()]:
        counts[i] += 1
    racks = np.repeat(np.arange(len(names)), counts)
    np.random.default_rng(seed).shuffle(racks)
    return [names[i] for i in racks]


def split_requests(requests: Requests, n_nodes: int, seed: int) -> list[Requests]:
    """Each request to one node chosen uniformly at random with the seed, in arrival order."""
    node = np.random.default_rng(seed).integers(0, n_nodes, len(requests))
    return [Requests(requests.arrival_s[node == i], requests.input_tokens[node == i],
                     requests.output_tokens[node == i]) for i in range(n_nodes)]


def read_diurnal(path: Path | str) -> np.ndarray:
    """24 multipliers, one per hour of the day, from a CSV `hour,multiplier` (each hour 0-23 once,
    multipliers >= 0, one at least above 0)."""
    refuse_special_file(path, "diurnal CSV")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable diurnal CSV ({str(err).splitlines()[0][:100]})") from None
    if list(frame.columns) != ["hour", "multiplier"]:
        raise InputError(f"{path}: expected the header hour,multiplier")
    hours = pd.to_numeric(frame["hour"], errors="coerce")
    values = pd.to_numeric(frame["multiplier"], errors="coerce")
    if sorted(hours.tolist()) != list(range(24)) or not np.isfinite(values).all() or (values < 0).any() \
            or not (values > 0).any():
        raise InputError(f"{path}: needs each hour 0-23 once with a finite multiplier >= 0 (one above 0)")
    return values.to_numpy(dtype=np.float64)[np.argsort(hours.to_numpy())]
