"""A site's outputs: power CSVs, rack traces, metrics, the sizing table, oversubscription, figures."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from model.generation import methods
from model.latex import booktabs_table
from model.outputs import atomic_path, write_npz
from model.plots import PAGE_WIDTH_IN, PALETTE, REAL_COLOUR, STYLE, save_figure
from model.features import window_means
from model.sites.rollup import p95_peaks_of_random_rows

POWER_FACTOR = 0.9        # transformer sizing: MVA = MW / power factor
SIZING_COLUMNS = ("Peak 0.25 s (MW)", "Peak 1 s (MW)", "Peak 1 min (MW)", "Average (MW)", "Peak/average",
                  "Max 15-min ramp (MW)", "Load factor", "Transformer (MVA)", "Above nameplate (%)")
PEAK_COLUMNS = {0.25: SIZING_COLUMNS[0], 1.0: SIZING_COLUMNS[1], 60.0: SIZING_COLUMNS[2]}


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")


def write_site_power(out: Path, it_w: np.ndarray, pue: float, bin_s: float) -> None:
    """site_power.csv at 1 s and site_power_15min.csv, each time_s,it_w,total_w."""
    for name, resolution in (("site_power.csv", 1.0), ("site_power_15min.csv", 900.0)):
        it = window_means(it_w, int(round(resolution / bin_s)))
        write_frame(out / name, pd.DataFrame({"time_s": np.arange(len(it)) * resolution, "it_w": it,
                                              "total_w": it * pue}))


def write_racks(out: Path, racks: np.ndarray, rack_jobs: list[str], bin_s: float) -> None:
    per_second = window_means(racks, int(round(1.0 / bin_s)))
    write_npz(out / "racks_1s.npz", {"watts": per_second.astype(np.float32), "resolution_s": np.array(1.0),
                                     "rack_jobs": np.array(rack_jobs)})


def sizing(metrics: pd.DataFrame, nameplate: dict) -> pd.DataFrame:
    """Per method, what the site is sized by: peaks at 0.25 s, 1 s and 1 min, average (1 s),
    peak-to-average, largest 15-minute ramp, load factor, transformer rating at power factor 0.9
    (on the 1 s peak), and the share of bins above the site's nameplate sizing (`nameplate`:
    site.nameplate_report; a constant baseline is above it everywhere or nowhere)."""
    site = metrics[metrics["level"] == "site"]
    rows = []
    for method, label in [(m.name, m.label) for m in methods.site_baselines()] + [("ours", methods.label("ours"))]:
        of_method = site[site["method"] == method]
        at = {r: of_method[of_method["resolution_s"] == r].set_index("metric")["value"] for r in (*PEAK_COLUMNS, 900.0)}
        one, quarter = at[1.0], at[900.0]
        above = nameplate["share_above_nameplate"] if method == "ours" else \
            float(one["peak_w"] > nameplate["nameplate_w"])
        rows.append({"method": label,
                     **{column: at[r]["peak_w"] / 1e6 if len(at[r]) else float("nan")
                        for r, column in PEAK_COLUMNS.items()},
                     SIZING_COLUMNS[3]: one["average_w"] / 1e6, SIZING_COLUMNS[4]: one["par"],
                     SIZING_COLUMNS[5]: max(quarter["ramp_max_up_w"], quarter["ramp_max_down_w"]) / 1e6,
                     SIZING_COLUMNS[6]: one["load_factor"],
                     SIZING_COLUMNS[7]: one["peak_w"] / 1e6 / POWER_FACTOR, SIZING_COLUMNS[8]: 100 * above})
    return pd.DataFrame(rows)


def _cell(value: float, column: str) -> str:
    if not np.isfinite(value):
        return "--"          # a resolution finer than the site's bins
    return f"{value:.3f}" if "MW" in column or "MVA" in column else f"{value:.2f}"


def sizing_table(table: pd.DataFrame, caption: str) -> str:
    """The sizing table in the training table's LaTeX style."""
    heads = [r"\textbf{" + c.replace("%", r"\%") + "}" for c in SIZING_COLUMNS]
    rows = [[row["method"], *(_cell(row[c], c) for c in SIZING_COLUMNS)] for _, row in table.iterrows()]
    return booktabs_table(caption, "tab:site_sizing", [r"\textbf{Method}", *heads], rows)


def oversubscription(rack_traces: np.ndarray, rack_constants: dict[str, np.ndarray], limit_w: float,
                     draws: int, seed: int) -> tuple[pd.DataFrame, dict[str, int], list[str]]:
    """How many racks a row of `limit_w` carries: for n distinct racks drawn at random from the
    site's rack traces, the P95 over draws of their summed peak, for n = 1, 2, ... until it passes
    the limit; for the constant baselines, the limit over the mean rack's watts. No answer is
    larger than the site's racks: the names in the returned list reached that number without
    passing the limit, so their answer is "at least" it."""
    n_racks = len(rack_traces)
    curve = p95_peaks_of_random_rows(rack_traces, limit_w, draws, np.random.default_rng(seed))
    rows = [{"racks": n + 1, "p95_peak_w": p95} for n, p95 in enumerate(curve)]
    fits = {"ours": sum(p95 <= limit_w for p95 in curve)}
    for name, watts in rack_constants.items():
        fits[name] = int(math.floor(limit_w / float(np.mean(watts))))
    at_site_limit = [name for name, n in fits.items() if n >= n_racks]
    return pd.DataFrame(rows), {name: min(n, n_racks) for name, n in fits.items()}, at_site_limit


def row_answer(name: str, racks: int, at_site_limit: list[str]) -> str:
    """'ours 39', or 'ours at least 60 (site limit)' when the whole site fits under the limit."""
    return f"{name} at least {racks} (site limit)" if name in at_site_limit else f"{name} {racks}"


def write_figures(out: Path, it_w: np.ndarray, pue: float, bin_s: float, racks: np.ndarray,
                  constant_totals: dict[str, float], curve: pd.DataFrame | None, limit_w: float | None) -> list[Path]:
    written = []
    with matplotlib.rc_context(STYLE):
        minute = window_means(it_w, int(round(60 / bin_s))) * pue
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.4), layout="constrained")
        ax = fig.subplots()
        ax.plot(np.arange(len(minute)) / 60.0, minute / 1e6, color=REAL_COLOUR, linewidth=0.8, label="ours (1-min mean)")
        for colour, (name, value) in zip(PALETTE[1:], constant_totals.items()):
            ax.axhline(value / 1e6, color=colour, linestyle="--", linewidth=0.9, label=name)
        ax.set_xlabel("time (h)")
        ax.set_ylabel("site power (MW)")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        written += save_figure(fig, out, "site_power")

        quarter = np.sort(window_means(it_w, int(round(900 / bin_s))) * pue)[::-1]
        fig = Figure(figsize=(PAGE_WIDTH_IN / 2, 2.4), layout="constrained")
        ax = fig.subplots()
        ax.step(100 * np.arange(1, len(quarter) + 1) / len(quarter), quarter / 1e6, color=REAL_COLOUR, where="post")
        ax.set_xlabel("share of 15-min intervals (%)")
        ax.set_ylabel("site power at least (MW)")
        written += save_figure(fig, out, "load_duration_15min")

        day = int(round(min(86400.0, racks.shape[1] * bin_s) / bin_s))
        per_minute = window_means(racks[:, :day - day % int(round(60 / bin_s))], int(round(60 / bin_s)))
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.6), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(per_minute / 1e3, aspect="auto", interpolation="nearest", cmap="viridis",
                          extent=(0, per_minute.shape[1] / 60.0, racks.shape[0] - 0.5, -0.5))
        ax.set_xlabel("time (h)")
        ax.set_ylabel("rack")
        fig.colorbar(image, ax=ax, label="rack power (kW, 1-min mean)")
        written += save_figure(fig, out, "rack_heatmap")

        if curve is not None:
            fig = Figure(figsize=(PAGE_WIDTH_IN / 2, 2.4), layout="constrained")
            ax = fig.subplots()
            ax.plot(curve["racks"], curve["p95_peak_w"] / 1e3, color=REAL_COLOUR, label="P95 peak of n random racks")
            ax.axhline(limit_w / 1e3, color=PALETTE[1], linestyle="--", label="row limit")
            ax.set_xlabel("racks in the row")
            ax.set_ylabel("row power (kW)")
            ax.legend(frameon=False)
            written += save_figure(fig, out, "oversubscription")
    return written
