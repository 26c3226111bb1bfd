"""A site's outputs: power CSVs, rack traces, metrics, the sizing table, oversubscription, figures."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from model.generation import methods
from model.latex import booktabs_table, two_lines
from model.outputs import atomic_path, write_json, write_npz, write_text
from model.plots import PAGE_WIDTH_IN, PALETTE, REAL_COLOUR, STYLE, save_figure
from model.features import window_means
from model.sites.rollup import power_unit, racks_under, row_peaks

POWER_FACTOR = 0.9        # transformer sizing: MVA = MW / power factor

# The sizing table's quantities, one row each in its .tex (methods are its columns, so that it fits
# one column of a two-column paper): key (the column of sizing(), in watts, volt-amperes, joules or
# no unit), label, kind (how a value is shown: "power" and "va" in W, kW or MW by the row's size).
SIZING_ROWS = (
    ("peak_0.25s_w", "Peak, 0.25 s", "power"), ("peak_1s_w", "Peak, 1 s", "power"),
    ("peak_1min_w", "Peak, 1 min", "power"), ("average_w", "Average", "power"),
    ("par", "Peak/average", "ratio"), ("load_factor", "Load factor", "ratio"),
    ("ramp_max_1s_w", "Largest ramp, 1 s", "power"), ("ramp_max_1min_w", "Largest ramp, 1 min", "power"),
    ("ramp_max_15min_w", "Largest ramp, 15 min", "power"), ("ramp_p99_1s_w", "Ramp p99, 1 s", "power"),
    ("row_peak_mean_w", "Row peak, mean", "power"), ("row_peak_worst_w", "Row peak, worst", "power"),
    ("rack_peak_mean_w", "Rack peak, mean", "power"), ("rack_peak_worst_w", "Rack peak, worst", "power"),
    ("diversity_factor", "Diversity factor", "ratio"), ("transformer_va", "Transformer, pf 0.9", "va"),
    ("above_nameplate_pct", "Above nameplate", "percent"),
    ("j_per_request", "Energy/request", "energy"), ("j_per_output_token", "Energy/output token", "energy"),
)
RESOLUTION_KEYS = {0.25: "0.25s", 1.0: "1s", 60.0: "1min", 900.0: "15min"}


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


def sizing(metrics: pd.DataFrame, nameplate: dict, energy: dict) -> pd.DataFrame:
    """Per method (a row each, "method" its table label), what the site is sized by, in watts,
    volt-amperes or joules (SIZING_ROWS): peaks at 0.25 s, 1 s and 1 min, the average, peak to
    average and load factor (1 s), the largest ramp at 1 s, 1 min and 15 min and the 1 s ramp's p99,
    the mean and the worst row's and rack's 1 s peak (IT watts), the site's diversity factor (1 s),
    a transformer at power factor 0.9 on the 1 s peak, the share of bins above the site's nameplate
    sizing (`nameplate`: site.nameplate_report; a constant baseline is above it everywhere or
    nowhere) and the energy per request and per output token (`energy`: site.energy_report)."""
    rows = []
    lookup = metrics.set_index(["method", "level", "resolution_s", "metric"])["value"].to_dict()
    for method in [m.name for m in methods.site_baselines()] + ["ours"]:
        def value(level: str, resolution: float, metric: str, method=method) -> float:
            # NaN: a resolution finer than the site's bins
            return float(lookup.get((method, level, resolution, metric), float("nan")))

        row = {"method": methods.label(method)}
        row |= {f"peak_{RESOLUTION_KEYS[r]}_w": value("site", r, "peak_w") for r in (0.25, 1.0, 60.0)}
        row |= {"average_w": value("site", 1.0, "average_w"), "par": value("site", 1.0, "par"),
                "load_factor": value("site", 1.0, "load_factor")}
        row |= {f"ramp_max_{RESOLUTION_KEYS[r]}_w": max(value("site", r, "ramp_max_up_w"),
                                                         value("site", r, "ramp_max_down_w"))
                for r in (1.0, 60.0, 900.0)}
        row |= {"ramp_p99_1s_w": value("site", 1.0, "ramp_p99_w")}
        for level in ("row", "rack"):
            row |= {f"{level}_peak_mean_w": value(level, 1.0, "peak_w"),
                    f"{level}_peak_worst_w": value(f"worst_{level}", 1.0, "peak_w")}
        above = nameplate["share_above_nameplate"] if method == "ours" else \
            float(row["peak_1s_w"] > nameplate["nameplate_w"])
        row |= {"diversity_factor": value("site", 1.0, "diversity_factor"),
                "transformer_va": row["peak_1s_w"] / POWER_FACTOR, "above_nameplate_pct": 100 * above,
                **energy[method]}
        rows.append(row)
    return pd.DataFrame(rows)


def readable_power(watts: float) -> str:
    """'1.19 MW', '43.7 kW', '830 W'."""
    unit, scale = power_unit([watts])
    return f"{watts / scale:.3g} {unit}"


def _cell(value: float, kind: str, scale: float) -> str:
    if not np.isfinite(value):
        return "--"                                     # nothing to show: a resolution finer than the bins
    if kind in ("power", "va"):
        return f"{value / scale:.3f}" if scale == 1e6 else f"{value / scale:.1f}"
    if kind == "percent":
        return f"{value:.1f}"
    if kind == "energy":
        value /= scale
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{value:.2f}"


def sizing_display(table: pd.DataFrame) -> pd.DataFrame:
    """sizing() as it is read: a row per quantity, labelled with its unit, a column per method,
    text cells; powers in W, kW or MW by the row's largest value (rollup.power_unit), so a small
    ramp reads 14.0 kW, not 0.014 MW."""
    out = {}
    for key, label, kind in SIZING_ROWS:
        values = table[key].to_numpy(dtype=np.float64)
        # powers, volt-amperes and joules by the row's size (W, kW, MW and alike)
        unit, scale = power_unit(values) if kind in ("power", "va", "energy") else ("", 1.0)
        unit = {"power": unit, "va": unit.replace("W", "VA"), "percent": "%",
                "energy": unit.replace("W", "J")}.get(kind, unit)
        out[f"{label} ({unit})" if unit else label] = [_cell(v, kind, scale) for v in values]
    return pd.DataFrame(out, index=table["method"].tolist()).T


def _tex(text: str) -> str:
    return text.replace("%", r"\%").replace("at least ", r"$\geq$\,")


def display_tex(display: pd.DataFrame, caption: str, label: str) -> str:
    """A display table (text cells, rows labelled) as a one-column booktabs table."""
    heads = [two_lines(*(r"\textbf{" + _tex(part) + "}" for part in str(c).split(" ", 1))) if " " in str(c)
             else r"\textbf{" + _tex(str(c)) + "}" for c in display.columns]
    rows = [[_tex(str(index)), *(_tex(str(v)) for v in row)] for index, row in zip(display.index, display.values)]
    return booktabs_table(caption, label, ["", *heads], rows, wide=False)


def sizing_table(table: pd.DataFrame, caption: str) -> str:
    """The sizing table in the training table's LaTeX style, transposed to fit one column."""
    return display_tex(sizing_display(table), caption, "tab:site_sizing")


def write_table(out: Path, stem: str, table: pd.DataFrame, tex: str) -> None:
    """A table three ways: {stem}.csv and {stem}.json (the numbers, one record per row) and
    {stem}.tex."""
    write_frame(out / f"{stem}.csv", table)
    write_json(out / f"{stem}.json", json.loads(table.to_json(orient="records", double_precision=10)))
    write_text(out / f"{stem}.tex", tex)


def oversubscription(rack_traces: np.ndarray, rack_constants: dict[str, np.ndarray], limit_w: float,
                     draws: int, seed: int, risk: float = 95.0) -> tuple[pd.DataFrame, dict[str, int], list[str]]:
    """How many racks a row of `limit_w` carries, for ours and each constant baseline: for n
    distinct racks drawn at random from the site's racks, how their summed peak spreads over the
    draws (rollup.row_peaks: p05, p50, p95, the `risk` percentile, max, the share above the
    limit), for n = 1, 2, ... until the `risk` percentile passes the limit; the answer is the
    largest n under it. A curve of rows (column `method`), the answers, and the methods that
    reached the site's racks without passing the limit (their answer is "at least" it): no
    answer is larger than the site's racks."""
    n_racks = len(rack_traces)
    curves, fits = [], {}
    traces = {"ours": rack_traces} | {name: np.asarray(w, dtype=np.float64)[:, None] for name, w in rack_constants.items()}
    for i, (name, racks) in enumerate(traces.items()):
        rng = np.random.default_rng(seed if name == "ours" else [seed, i])
        curve = row_peaks(racks, limit_w, draws, rng, risk)
        fits[name] = racks_under(curve, limit_w)
        curves += [{"method": name, **point} for point in curve]
    at_site_limit = [name for name, n in fits.items() if n >= n_racks]
    return pd.DataFrame(curves), fits, at_site_limit


def row_sizing(curve: pd.DataFrame, largest: dict[str, int], at_site_limit: list[str]) -> pd.DataFrame:
    """Per method, the answer and how the peaks of its rows spread there: racks, whether the site
    limit bounds it, p05/p50/p95/max of the row peak and the share of random rows above the limit
    (an answer of 0 racks has no row: NaN)."""
    rows = []
    for name, racks in largest.items():
        point = curve[(curve["method"] == name) & (curve["racks"] == racks)]
        stats = point.iloc[0] if len(point) else pd.Series(dtype=float)
        rows.append({"method": methods.label(name), "racks": racks, "at_site_limit": name in at_site_limit,
                     **{k: float(stats.get(k, float("nan"))) for k in ("p05_w", "p50_w", "p95_w", "max_w", "p_exceed")}})
    return pd.DataFrame(rows)


def row_sizing_display(rows: pd.DataFrame, risk: float) -> pd.DataFrame:
    """row_sizing() as it is read: a column per method; peaks in kW."""
    out = {f"Racks (P{risk:g} under limit)": [f"at least {n}" if limit else str(n)
                                                 for n, limit in zip(rows["racks"], rows["at_site_limit"])]}
    for key, label in (("p05_w", "Row peak p05"), ("p50_w", "Row peak p50"), ("p95_w", "Row peak p95"),
                       ("max_w", "Row peak max")):
        out[f"{label} (kW)"] = [_cell(v, "power", 1e3) for v in rows[key]]
    out["Rows above limit (%)"] = [_cell(100 * v, "percent", 1.0) for v in rows["p_exceed"]]
    return pd.DataFrame(out, index=rows["method"].tolist()).T


def row_answer(name: str, racks: int, at_site_limit: list[str]) -> str:
    """'ours 39', or 'ours at least 60 (site limit)' when the whole site fits under the limit."""
    return f"{name} at least {racks} (site limit)" if name in at_site_limit else f"{name} {racks}"


def write_figures(out: Path, it_w: np.ndarray, pue: float, bin_s: float, racks: np.ndarray, racks_per_row: int,
                  constant_totals: dict[str, float], curve: pd.DataFrame | None, limit_w: float | None,
                  largest: dict[str, int] | None = None, risk: float = 95.0,
                  at_site_limit: list[str] = ()) -> list[Path]:
    """Site power over time, the 15-minute load-duration curve, the racks' heat map and, with a
    row limit, the oversubscription curve; each beside the constant baselines
    (`constant_totals`: label -> site watts, in methods.site_baselines() order; `largest`: method
    -> racks per row; `at_site_limit`: the methods whose answer is every rack of the site, shown
    as at least that many)."""
    from matplotlib.ticker import MaxNLocator
    # one colour per baseline in every figure (constant_totals holds them in registry order)
    colour_of = dict(zip([m.name for m in methods.site_baselines()], PALETTE[1:]))
    written = []
    with matplotlib.rc_context(STYLE):
        minute = window_means(it_w, int(round(60 / bin_s))) * pue
        unit, scale = power_unit([minute.max(), *constant_totals.values()])     # a small site in kW
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.4), layout="constrained")
        ax = fig.subplots()
        ax.plot(np.arange(len(minute)) / 60.0, minute / scale, color=REAL_COLOUR, linewidth=0.8, label="ours (1-min mean)")
        for colour, (name, value) in zip(PALETTE[1:], constant_totals.items()):
            ax.axhline(value / scale, color=colour, linestyle="--", linewidth=0.9, label=name)
        ax.set_xlabel("time (h)")
        ax.set_ylabel(f"site power ({unit})")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        written += save_figure(fig, out, "site_power")

        # the reference lines set the scale: without them a flat site's curve fills the axis with
        # a band of a fraction of a percent
        quarter = np.sort(window_means(it_w, int(round(900 / bin_s))) * pue)[::-1]
        fig = Figure(figsize=(PAGE_WIDTH_IN / 2, 2.4), layout="constrained")
        ax = fig.subplots()
        # interval i of n covers (i / n, (i + 1) / n] of the time
        ax.stairs(quarter / scale, 100 * np.arange(len(quarter) + 1) / len(quarter), color=REAL_COLOUR,
                  baseline=None, label="ours")
        for colour, (name, value) in zip(PALETTE[1:], constant_totals.items()):
            ax.axhline(value / scale, color=colour, linestyle="--", linewidth=0.9, label=name)
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of 15-min intervals (%)")
        ax.set_ylabel(f"site power at least ({unit})")
        ax.legend(frameon=False, fontsize="small", loc="best")
        written += save_figure(fig, out, "load_duration_15min")

        day = int(round(min(86400.0, racks.shape[1] * bin_s) / bin_s))
        per_minute = window_means(racks[:, :day - day % int(round(60 / bin_s))], int(round(60 / bin_s)))
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.6), layout="constrained")
        ax = fig.subplots()
        rack_unit, rack_scale = power_unit(per_minute)
        image = ax.imshow(per_minute / rack_scale, aspect="auto", interpolation="nearest", cmap="viridis",
                          extent=(0, per_minute.shape[1] / 60.0, racks.shape[0] - 0.5, -0.5))
        for boundary in range(racks_per_row, racks.shape[0], racks_per_row):     # between rows
            ax.axhline(boundary - 0.5, color="white", linewidth=0.8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("time (h)")
        ax.set_ylabel(f"rack (rows of {racks_per_row})")
        bar = fig.colorbar(image, ax=ax, label=f"rack power ({rack_unit}, 1-min mean)")
        bar.formatter.set_useOffset(False)        # a flat site's scale reads in watts, not "+2.6"
        bar.update_ticks()
        written += save_figure(fig, out, "rack_heatmap")

        if curve is not None:
            ours = curve[curve["method"] == "ours"]
            fig = Figure(figsize=(PAGE_WIDTH_IN / 2, 2.6), layout="constrained")
            ax = fig.subplots()
            row_unit, row_scale = power_unit([limit_w, *ours["max_w"]])
            ax.fill_between(ours["racks"], ours["p05_w"] / row_scale, ours["max_w"] / row_scale, color=REAL_COLOUR,
                            alpha=0.15, linewidth=0, label="p05 to max")
            ax.plot(ours["racks"], ours["risk_w"] / row_scale, color=REAL_COLOUR, marker="." if len(ours) <= 20 else None,
                    label=f"ours, P{risk:g} peak of n random racks")
            ax.axhline(limit_w / row_scale, color=PALETTE[0], linestyle="--", label="row limit")
            for name, racks_fit in (largest or {}).items():
                if name != "ours" and racks_fit > 0:
                    answer = f"\u2265 {racks_fit} (site limit)" if name in at_site_limit else str(racks_fit)
                    ax.axvline(racks_fit, color=colour_of.get(name, PALETTE[-1]), linestyle=":",
                               label=f"{methods.label(name)}: {answer}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("racks in the row")
            ax.set_ylabel(f"row power ({row_unit})")
            ax.legend(frameon=False, fontsize="small", loc="lower right")     # below the rising curve: free
            written += save_figure(fig, out, "oversubscription")
    return written
