"""A sweep of sites from one TOML file: every combination of its [sweep] lists, each scenario
run once per seed, their sizing numbers in one tidy table with their spread over the seeds.

    python -m model.facility --scenario docs/scenario.example.toml --output_dir demo/sweep --jobs 2

The file (docs/scenario.example.toml):

    seeds = [0, 1, 2]           # each scenario once per seed (the site's --seed)
    [site]                      # model.facility's flags, without the dashes, for every scenario
    config = "llama-3-70b_h100_tp4"
    duration = 3600
    [sweep]                     # a list of values per flag: the scenarios are every combination
    rate_per_node = [0.25, 0.5]

Keys are the fields of FacilitySettings (model/command_settings.py), each of its flag's type;
`config` is a job name or a list of "JOB:SHARE" (a mix), so a sweep of it is a list of those;
"" leaves an optional flag unset (diurnal = ["", "docs/diurnal.example.csv"]). Paths are read
as on the command line, from the working folder. How the command runs (--output_dir, --jobs,
--no_progress, --overwrite) stays on the command line; the seed is `seeds`. Every scenario is
checked, one line naming the file and the key, before the first runs.

Each run is a site built by model/sites/build.py, in OUTPUT_DIR/runs/sNN_seedS/ with all its
files. Then OUTPUT_DIR gets scenarios.csv (a row per scenario and seed: scenario, label, the
swept values, seed, run folder, requests served, ours' site peaks at 0.25 s, 1 s and 1 min,
average, peak/average, load factor, largest 15-minute ramp, transformer and share above
nameplate, each baseline's 1 s peak, in W and VA, and with row_limit_kw the racks per row, all
read from the run's facility_metrics.csv and manifest.json), scenario_summary.csv (a row per
scenario and number: seeds, mean, sample standard deviation, min, max), scenario_peaks.png/.pdf,
report.html and manifest.json. An interrupted or failed sweep keeps the runs it finished.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from model import config
from model.command_settings import FacilitySettings
from model.errors import InputError, read_structured
from model.generation import methods
from model.outputs import atomic_path, file_sha256, locked_directory, staged_folder
from model.plots import PAGE_WIDTH_IN, PALETTE, REAL_COLOUR, STYLE, save_figure
from model.provenance import environment, git_state
from model.settings import check_seed
from model.sites import html_report, report
from model.sites.build import build_site, site_inputs
from model.sites.output_folder import (SWEEP_SUBFOLDERS, check_previous_run, refuse_foreign, remove_files,
                                       write_manifest)
from model.sites.rollup import power_unit

RUN_FLAGS = ("output_dir", "jobs", "progress", "overwrite", "scenario")   # the command line's, not the file's
RUNS_SUBDIR = "runs"
TABLE, SUMMARY = "scenarios.csv", "scenario_summary.csv"


@dataclass(frozen=True)
class Run:
    scenario: int                 # 1, 2, ...: which combination of the swept values
    label: str                    # those values in a few words
    values: dict                  # swept key -> value
    seed: int
    settings: FacilitySettings


def _scenario_keys() -> dict[str, str]:
    """Key -> the type of its FacilitySettings field, for every key a scenario file may set."""
    return {f.name: f.type for f in fields(FacilitySettings)
            if f.metadata["cli"] and f.metadata["group"] != "slurm" and f.name not in RUN_FLAGS + ("seed",)}


def _convert(path: Path, where: str, key: str, raw):
    """`raw` (a TOML value) as field `key` holds it, or InputError naming the file and the key."""
    kinds = _scenario_keys()
    if key == "seed":
        raise InputError(f"{path}: {where} seed: give the seeds as seeds = [0, 1, 2] at the top of the file")
    if key in RUN_FLAGS or key not in kinds:
        why = ("a flag of the command line, not of a scenario" if key in RUN_FLAGS else
               "a Slurm flag; a sweep runs its sites here" if key == "racks_per_task" else
               "unknown key; the keys are model.facility's flags without the dashes (--help)")
        raise InputError(f"{path}: {where} {key}: {why}")
    kind = kinds[key]
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if optional and raw == "":
        return None
    ok = {"int": isinstance(raw, int) and not isinstance(raw, bool),
          "float": isinstance(raw, (int, float)) and not isinstance(raw, bool),
          "str": isinstance(raw, str), "bool": isinstance(raw, bool),
          "list[str]": isinstance(raw, str) or (isinstance(raw, list) and bool(raw)
                                                and all(isinstance(item, str) for item in raw))}[kind]
    if not ok:
        expected = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "true or false",
                    "list[str]": 'a string or a list of strings ("JOB:SHARE" for a mix)'}[kind]
        raise InputError(f"{path}: {where} {key} = {raw!r}: expected {expected}" + (' (or "" for none)' if optional
                                                                                   else ""))
    if kind == "float":
        return float(raw)
    if kind == "list[str]":
        return [raw] if isinstance(raw, str) else list(raw)
    return raw


def read_scenarios(path: Path | str) -> tuple[dict, dict[str, list], list[int]]:
    """The file's [site] values, [sweep] lists and seeds, each checked and of its field's type."""
    path = Path(path)
    data = read_structured(path, "scenario file", tomllib.loads)
    for key in data:
        if key not in ("seeds", "site", "sweep"):
            raise InputError(f"{path}: {key}: unknown key; a scenario file holds seeds, [site] and [sweep]")
    seeds = data.get("seeds")
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            and len(set(seeds)) == len(seeds)):
        raise InputError(f"{path}: seeds = {seeds!r}: expected a list of distinct whole numbers, e.g. seeds = [0, 1, 2]")
    for seed in seeds:
        try:
            check_seed(seed)
        except InputError as err:
            raise InputError(f"{path}: seeds: {err}") from None
    site, sweep = data.get("site", {}), data.get("sweep", {})
    for name, table in (("site", site), ("sweep", sweep)):
        if not isinstance(table, dict):
            raise InputError(f"{path}: {name}: expected a table [{name}] of model.facility's flags")
    values = {key: _convert(path, "[site]", key, raw) for key, raw in site.items()}
    lists = {}
    for key, raw in sweep.items():
        if key in site:
            raise InputError(f"{path}: [sweep] {key}: also set in [site]; give it in one of them")
        if not (isinstance(raw, list) and raw):
            raise InputError(f"{path}: [sweep] {key} = {raw!r}: expected a list of values to sweep, e.g. [0.25, 0.5]")
        lists[key] = [_convert(path, "[sweep]", key, item) for item in raw]
    return values, lists, seeds


def _shown(value, short: bool = False) -> str:
    """A swept value in a table cell, or with `short` in a label (a file by its name only)."""
    if value is None:
        return "none"
    if isinstance(value, list):
        return " + ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return Path(value).name if short and isinstance(value, str) else str(value)


def expand(path: Path | str, site: dict, sweep: dict[str, list], seeds: list[int], command: FacilitySettings,
           output_dir: Path) -> list[Run]:
    """One Run per combination of the swept values and seed, each a checked FacilitySettings
    writing into output_dir/runs/sNN_seedS; InputError naming the file and the scenario."""
    runs = []
    combinations = list(itertools.product(*sweep.values()))
    for number, combination in enumerate(combinations, start=1):
        values = dict(zip(sweep, combination))
        label = ", ".join(f"{key}={_shown(value, short=True)}" for key, value in values.items()) or "the [site]"
        for seed in seeds:
            folder = output_dir / RUNS_SUBDIR / f"s{number:0{len(str(len(combinations)))}d}_seed{seed}"
            settings = FacilitySettings(**(site | values), seed=seed, output_dir=str(folder), jobs=command.jobs,
                                        progress=command.progress, overwrite=command.overwrite)
            try:
                _check(settings)
            except InputError as err:
                raise InputError(f"{path}: scenario {number} ({label}): {err}") from None
            runs.append(Run(number, label, values, seed, settings))
    return runs


def _check(settings: FacilitySettings) -> None:
    """What the run would refuse, said before any run starts: its flags, and what they name
    (build.site_inputs: layout, checkpoints, files, memory)."""
    settings.validate()
    site_inputs(settings)


def _refuse_site_flags(command: FacilitySettings) -> None:
    """With --scenario, a site flag on the command line would be silently overruled: refused."""
    defaults = FacilitySettings()
    for f in fields(FacilitySettings):
        if f.name in RUN_FLAGS or getattr(command, f.name) == getattr(defaults, f.name):
            continue
        if f.name in ("launcher", "slurm", "racks_per_task"):
            raise InputError(f"--{'launcher' if f.name == 'slurm' else f.name}: a sweep runs its sites here, "
                             "not with --scenario")
        where = "the file's top-level seeds = [...]" if f.name == "seed" else "the file's [site] or [sweep]"
        raise InputError(f"--{f.name}: not with --scenario {command.scenario}; give it in {where}")


def run_scenarios(command: FacilitySettings) -> int:
    """model.facility --scenario: every run of the file, then the sweep's own files; the exit
    status (a run's, when one stops the sweep)."""
    _refuse_site_flags(command)
    if command.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {command.jobs}")
    path, out = Path(command.scenario), Path(command.output_dir)
    site, sweep, seeds = read_scenarios(path)
    runs = expand(path, site, sweep, seeds, command, out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {out}: is a file, not a folder")
    made_out = not out.exists()
    try:
        with locked_directory(out, "--output_dir"):
            # a previous sweep's files, runs/ included, go before the sweep: its runs write into runs/
            remove_files(out, check_previous_run(out, command.overwrite, SWEEP_SUBFOLDERS))
            return _sweep(path, sweep, seeds, runs, out)
    finally:
        if made_out:
            try:
                out.rmdir()                   # only if nothing is in it
            except OSError:
                pass


def _sweep(path: Path, sweep: dict, seeds: list[int], runs: list[Run], out: Path) -> int:
    n_scenarios = runs[-1].scenario
    for i, run in enumerate(runs, start=1):
        print(f"\nrun {i}/{len(runs)}: scenario {run.scenario}/{n_scenarios} ({run.label}), seed {run.seed}",
              flush=True)
        stopped = f"facility: the sweep stopped at run {i}; the runs before it are in {out / RUNS_SUBDIR}/"
        try:
            status = build_site(run.settings)
        except InputError as err:     # a refusal only this run's traffic shows (--strict): one line still
            raise InputError(f"{err}; the sweep stopped at run {i}, the runs before it are in "
                             f"{out / RUNS_SUBDIR}/") from None
        if status != 0:
            print(stopped, file=sys.stderr)
            return status
    manifests = [json.loads((Path(run.settings.output_dir) / "manifest.json").read_text()) for run in runs]
    table = scenario_table(runs, manifests, out)
    summary = spread_over_seeds(table, list(sweep))
    with staged_folder(out) as staging:
        for name, frame in ((TABLE, table), (SUMMARY, summary)):
            with atomic_path(staging / name) as tmp:      # MW to 10 digits: a small site's watts too
                frame.to_csv(tmp, index=False, float_format="%.10g")
        _draw_peaks(staging, table)
        manifest = _manifest(path, sweep, seeds, runs, manifests, out)
        html_report.write_report(staging, f"Scenario sweep: {n_scenarios} scenario(s) x {len(seeds)} seed(s)",
                                 _report_sections(staging, table, summary, manifest),
                                 f"{config.recorded_path(path)}, seeds {', '.join(map(str, seeds))}")
        write_manifest(staging, manifest)
        refuse_foreign(out, staging, [])       # the previous sweep's files went before it ran
    print(f"\n{_spread_lines(table)}\n{out}/: {TABLE}, {SUMMARY}, report.html ({len(runs)} runs in {RUNS_SUBDIR}/)")
    return 0


# A run's numbers in scenarios.csv, read from its facility_metrics.csv (the site level): column
# (after "ours_", or a baseline's name for peak_1s_w), resolution (s), metrics whose largest it is.
SITE_NUMBERS = (("peak_0.25s_w", 0.25, ("peak_w",)), ("peak_1s_w", 1.0, ("peak_w",)),
                ("peak_1min_w", 60.0, ("peak_w",)), ("average_w", 1.0, ("average_w",)), ("par", 1.0, ("par",)),
                ("load_factor", 1.0, ("load_factor",)),
                ("ramp_max_15min_w", 900.0, ("ramp_max_up_w", "ramp_max_down_w")))
PEAK_1S = "peak_1s_w"


def run_numbers(folder: Path, manifest: dict) -> dict:
    """A finished run's numbers from its own files, in watts (site total, PUE included): for
    ours SITE_NUMBERS, a transformer at report.POWER_FACTOR on the 1 s peak and the share of
    bins above the nameplate sizing; each baseline's 1 s peak; requests served; racks per row."""
    metrics = pd.read_csv(folder / "facility_metrics.csv")
    site = metrics[metrics["level"] == "site"].set_index(["method", "resolution_s", "metric"])["value"]

    def value(method: str, resolution: float, names: tuple[str, ...]) -> float:
        found = [site[(method, resolution, name)] for name in names if (method, resolution, name) in site.index]
        return float(max(found)) if found else float("nan")     # NaN: a resolution finer than the bins
    numbers = {"requests_served": int(manifest["requests_served"][0])}
    numbers |= {f"ours_{key}": value("ours", resolution, names) for key, resolution, names in SITE_NUMBERS}
    numbers |= {"ours_transformer_va": numbers[f"ours_{PEAK_1S}"] / report.POWER_FACTOR,
                "ours_above_nameplate_pct": 100 * manifest["nameplate"]["share_above_nameplate"]}
    numbers |= {f"{m.name}_{PEAK_1S}": value(m.name, 1.0, ("peak_w",)) for m in methods.site_baselines()}
    at_limit = manifest.get("row_racks_at_site_limit") or []
    for name, racks in (manifest.get("largest_row_racks") or {}).items():
        numbers[f"row_racks_{name}"] = racks
        numbers[f"row_racks_{name}_at_site_limit"] = name in at_limit   # then the number is a lower bound
    return numbers


def scenario_table(runs: list[Run], manifests: list[dict], out: Path) -> pd.DataFrame:
    """scenarios.csv: one row per scenario and seed."""
    rows = [{"scenario": run.scenario, "label": run.label, **{k: _shown(v) for k, v in run.values.items()},
             "seed": run.seed, "run": Path(run.settings.output_dir).relative_to(out).as_posix(),
             **run_numbers(Path(run.settings.output_dir), manifest)} for run, manifest in zip(runs, manifests)]
    return pd.DataFrame(rows)


def spread_over_seeds(table: pd.DataFrame, swept: list[str]) -> pd.DataFrame:
    """scenario_summary.csv: per scenario and number, its seeds, mean, sample standard deviation
    (ddof 1; empty for one seed), min and max over the seeds."""
    keys = ["scenario", "label", *swept]
    numbers = [c for c in table.columns if c not in keys + ["seed", "run"] and pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    long = table.melt(id_vars=keys, value_vars=numbers, var_name="metric")
    spread = long.groupby(keys + ["metric"], sort=False)["value"].agg(
        seeds="count", mean="mean", std="std", min="min", max="max").reset_index()
    return spread.sort_values("scenario", kind="stable", ignore_index=True)


def power_scale(values) -> tuple[float, str]:
    """Watts as a report shows them: the scale and the prefix ("", "k", "M") of rollup.power_unit."""
    unit, scale = power_unit(np.asarray(values, dtype=np.float64).ravel())
    return scale, unit.removesuffix("W")


def readable_units(frame: pd.DataFrame, like: pd.DataFrame | None = None) -> pd.DataFrame:
    """For a report: the *_w and *_va columns in W, kW or MW (VA, kVA, MVA) by the largest (of
    `like`'s, when given: standard deviations in their means' unit), renamed to say which
    (peak_1s_w -> peak_1s_kw)."""
    power = [c for c in frame.columns if c.endswith(("_w", "_va"))]
    if not power:
        return frame
    scale, prefix = power_scale((frame if like is None else like)[power])
    return frame.assign(**{c: frame[c] / scale for c in power}).rename(
        columns={c: c.rpartition("_")[0] + "_" + prefix.lower() + c.rpartition("_")[2] for c in power})


def _heading(column: str) -> str:
    """A table column as a report heading: 'ours_peak_1s_kw' -> 'Ours: peak 1s (kW)'."""
    owners = {"ours": methods.label("ours")} | {m.name: m.label for m in methods.site_baselines()}
    if column.startswith("row_racks_") and column.removeprefix("row_racks_") in owners:
        return f"{owners[column.removeprefix('row_racks_')]}: racks per row"
    owner, _, rest = column.partition("_")
    if owner not in owners:
        owner, rest = "", column
    for suffix, unit in (("_kw", " (kW)"), ("_mw", " (MW)"), ("_w", " (W)"), ("_kva", " (kVA)"),
                         ("_mva", " (MVA)"), ("_va", " (VA)"), ("_pct", " (%)")):
        if rest.endswith(suffix):
            rest = rest.removesuffix(suffix) + unit
            break
    rest = rest.replace("_", " ").replace("par", "peak/average")
    return f"{owners[owner]}: {rest}" if owner else rest


def _spread_lines(table: pd.DataFrame) -> str:
    """The sweep in a few lines: per scenario, ours' 1 s peak over the seeds against nameplate."""
    columns = [f"ours_{PEAK_1S}", f"tdp_{PEAK_1S}", f"mean_{PEAK_1S}"]
    scale, prefix = power_scale(table[columns])
    unit = f"{prefix}W"
    lines = []
    for (number, label), group in table.groupby(["scenario", "label"], sort=False):
        peaks, tdp, mean = (group[c] / scale for c in columns)
        spread = f" ± {peaks.std():.3f} ({peaks.min():.3f}-{peaks.max():.3f})" if len(peaks) > 1 else ""
        lines.append(f"scenario {number} ({label}): peak 1 s {peaks.mean():.3f} {unit}{spread} over {len(peaks)} "
                     f"seed(s); nameplate {tdp.mean():.3f} {unit}, mean {mean.mean():.3f} {unit}")
    return "\n".join(lines)


def _draw_peaks(folder: Path, table: pd.DataFrame) -> None:
    """scenario_peaks: per scenario, each seed's 1 s peak (ours) and the nameplate and mean sizings."""
    scenarios = table.drop_duplicates("scenario")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(PAGE_WIDTH_IN, 2.6), layout="constrained")
        ax = fig.subplots()
        x = {number: i for i, number in enumerate(scenarios["scenario"])}
        columns = [f"{name}_{PEAK_1S}" for name in ("ours", *(m.name for m in methods.site_baselines()))]
        scale, prefix = power_scale(table[columns])
        ax.scatter([x[n] for n in table["scenario"]], table[columns[0]] / scale, s=12, color=REAL_COLOUR,
                   label=f"{methods.label('ours')}, one dot per seed", zorder=3)
        for colour, column, method in zip(PALETTE[1:], columns[1:], methods.site_baselines()):
            ax.scatter(list(x.values()), scenarios[column] / scale, marker="_", s=400, color=colour, label=method.label)
        ax.set_xticks(list(x.values()), [str(n) for n in x])      # labels would overlap: the table says which
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_xlabel("scenario")
        ax.set_ylabel(f"site peak, 1 s ({prefix}W)")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save_figure(fig, folder, "scenario_peaks")


def _manifest(path: Path, sweep: dict, seeds: list[int], runs: list[Run], manifests: list[dict], out: Path) -> dict:
    inputs = {"scenario file": {"file": config.recorded_path(path), "sha256": file_sha256(path)}}
    for manifest in manifests:
        for name, record in manifest.get("inputs", {}).items():
            key = name if inputs.get(name, record) == record else f"{name} ({record.get('file', record.get('checkpoint'))})"
            inputs.setdefault(key, record)
    warned = [m for m in manifests if "warnings" in m]
    return {"inputs": inputs, "seeds": seeds,
            "sweep": {key: [_shown(v) for v in values] for key, values in sweep.items()},
            "runs": [{"scenario": run.scenario, "label": run.label, "seed": run.seed,
                      "folder": Path(run.settings.output_dir).relative_to(out).as_posix()} for run in runs],
            **({"warnings": sorted({w for m in warned for w in m["warnings"]})} if warned else {}),
            "git": git_state(),
            "versions": {k: v for k, v in environment().items() if k in ("python", "torch", "numpy", "pandas")}}


def _report_sections(folder: Path, table: pd.DataFrame, summary: pd.DataFrame, manifest: dict) -> list:
    """The sweep's report.html: the spread over seeds of the numbers a planner reads first, the
    figures, warnings, every run (the table's main columns) and the inputs."""
    main = [f"ours_{PEAK_1S}", "ours_average_w", "ours_par", "ours_transformer_va", f"tdp_{PEAK_1S}",
            f"mean_{PEAK_1S}"] + [c for c in table.columns if c.startswith("row_racks_") and not c.endswith("_limit")]
    keys = ["scenario", *table.columns[2:table.columns.get_loc("seed")]]     # and its swept values
    wide = summary.pivot_table(index=keys, columns="metric", values=["mean", "std"], sort=False)
    means, stds = readable_units(wide["mean"][main]), readable_units(wide["std"][main], like=wide["mean"][main])
    at_limit = {c: table.groupby("scenario", sort=False)[f"{c}_at_site_limit"].any().to_numpy()
                for c in main if c.startswith("row_racks_")}

    def cell(mean: float, std: float, column: str, i: int) -> str:   # no spread shown where there is none
        digits = 1 if column in at_limit else 3
        text = f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) and std > 0 else f"{mean:.{digits}f}"
        return f"at least {text} (site limit)" if column in at_limit and at_limit[column][i] else text
    cells = pd.DataFrame({column: [cell(m, s, column, i) for i, (m, s) in enumerate(zip(means[column], stds[column]))]
                          for column in means.columns}, index=means.index)
    runs = readable_units(table[keys + ["seed", "requests_served", *main, "ours_above_nameplate_pct"]])
    cells, runs = (frame.rename(columns=lambda c: c if c in keys + ["seed"] else _heading(c))
                   for frame in (cells.reset_index(), runs))
    return ([("Spread over seeds", html_report.table(cells, left=min(len(keys), 5)) +
              "<p>Mean ± sample standard deviation over the seeds: site total at 1 s, transformer at power factor "
              f"0.9; every number, with its min and max, is in {SUMMARY}.</p>"),
             ("Figures", html_report.figures(folder, first=("scenario_peaks",)))]
            + html_report.warnings_section(manifest.get("warnings"))
            + [("Every run", html_report.table(runs, left=min(len(keys) + 1, 5)) +
                f"<p>All columns are in {TABLE}; each run's folder (runs/) has its own report.html.</p>"),
               ("Inputs", html_report.table(html_report.inputs_frame(manifest["inputs"]), css="text")),
               ("Run", html_report.table(html_report.settings_frame(manifest, ("inputs", "warnings", "runs")),
                                         css="text"))])
