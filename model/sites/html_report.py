"""A run's report.html: one self-contained file to open in any browser or send by mail.

    write_site_report(folder, sizing, answers, manifest)    # model.facility, beside its other files
    write_report(folder, title, [(heading, body_html), ...]) # any page, from the pieces below

Everything is inside the file: styles inline, figures as base64 PNG (the run's own PNGs, drawn by
model/sites/report.py), tables by pandas' to_html; no script, no link to anything outside. It
holds what the run printed and wrote elsewhere (sizing table, answers, warnings, inputs with
their SHA-256), so the same run gives the same bytes: no clock, no machine name.
"""
from __future__ import annotations

import base64
import html
import json
import struct
from pathlib import Path

import pandas as pd

from model.generation import methods
from model.outputs import write_text
from model.plots import PNG_DPI
from model.sites.report import row_sizing_display
from model.sites.rollup import power_unit

REPORT = "report.html"
CSS_PX_PER_INCH = 125      # figures are shown at this size, whatever dpi model/plots.py draws them at
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.45em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
       border-bottom: 1px solid #ccc; padding-bottom: 0.15em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.4em 0; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
td { white-space: nowrap; } .left-2 td:nth-child(2) { white-space: normal; min-width: 14em; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
table.text td, table.text th { text-align: left; font-family: ui-monospace, Menlo, Consolas, monospace;
       word-break: break-all; white-space: normal; } table.text td:first-child { word-break: normal; }
ul.answers li { margin: 0.2em 0; } ul.warnings { background: #fff4e5; border-left: 4px solid #D55E00;
       padding: 0.5em 0.5em 0.5em 2em; } .none { color: #555; font-style: italic; }
figure { margin: 0.8em 0; display: inline-block; vertical-align: top; }
figure img { max-width: 100%; height: auto; } figcaption { font-size: 0.85em; color: #444; }
.sub { color: #444; margin-top: 0; } .scroll { overflow-x: auto; }
.left-2 td:nth-child(-n+2), .left-2 th:nth-child(-n+2), .left-3 td:nth-child(-n+3), .left-3 th:nth-child(-n+3),
.left-4 td:nth-child(-n+4), .left-4 th:nth-child(-n+4), .left-5 td:nth-child(-n+5), .left-5 th:nth-child(-n+5)
       { text-align: left; white-space: normal; }
"""


def write_report(folder: Path | str, title: str, sections: list[tuple[str, str]], subtitle: str = "") -> Path:
    """report.html in `folder`: a title and (heading, HTML) sections."""
    path = Path(folder) / REPORT
    write_text(path, page(title, sections, subtitle))
    return path


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    body = "".join(f"<h2>{html.escape(heading)}</h2>\n{content}\n" for heading, content in sections)
    sub = f'<p class="sub">{html.escape(subtitle)}</p>\n' if subtitle else ""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f"</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n{sub}{body}"
            "</body>\n</html>\n")


def table(frame: pd.DataFrame, index: bool = False, digits: int = 3, css: str = "", left: int = 1) -> str:
    """A DataFrame as an HTML table (pandas escapes the cells), floats to `digits` decimals, its
    first `left` columns (text, 1 to 5) aligned left, scrolled sideways on its own when wide."""
    classes = [c for c in (css, f"left-{left}") if c]
    inner = frame.rename_axis(columns=None).to_html(index=index, border=0, classes=classes, na_rep="–",
                                                    float_format=lambda value: f"{value:.{digits}f}")
    return f'<div class="scroll">{inner}</div>'


def bullets(lines: list[str], css: str) -> str:
    return f'<ul class="{css}">' + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def warnings_section(warnings: list[str] | None) -> list[tuple[str, str]]:
    """The manifest's "warnings" (one-line strings), or no section when the run records none."""
    if warnings is None:
        return []
    return [("Warnings", bullets(warnings, "warnings") if warnings else '<p class="none">None.</p>')]


def figures(folder: Path | str, first: tuple[str, ...] = ("site_power",)) -> str:
    """Every PNG in `folder` (not below it), embedded, those named in `first` first, then in
    name order, each captioned by its name."""
    out = []
    for path in sorted(Path(folder).glob("*.png"), key=lambda p: (p.stem not in first, p.name)):
        data = path.read_bytes()
        width = struct.unpack(">I", data[16:20])[0] if data[:8] == b"\x89PNG\r\n\x1a\n" else 0
        size = f' width="{round(width * CSS_PX_PER_INCH / PNG_DPI)}"' if width else ""
        out.append(f'<figure><img alt="{html.escape(path.stem)}"{size} src="data:image/png;base64,'
                   f'{base64.b64encode(data).decode("ascii")}"><figcaption>{html.escape(path.name)} (its PDF '
                   "is beside this file)</figcaption></figure>")
    return "\n".join(out) or '<p class="none">No figures.</p>'


def inputs_frame(inputs: dict) -> pd.DataFrame:
    """The manifest's "inputs" (name -> {checkpoint or file, sha256}) as rows input, file, sha256."""
    rows = [{"input": name, "file": record.get("checkpoint", record.get("file", "")), "sha256": record.get("sha256", "")}
            for name, record in inputs.items()]
    return pd.DataFrame(rows, columns=["input", "file", "sha256"])


def settings_frame(manifest: dict, leave_out: tuple[str, ...]) -> pd.DataFrame:
    """The manifest's other entries, one row each, the value as compact JSON (long ones cut)."""
    rows = []
    for key, value in manifest.items():
        if key in leave_out:
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
        rows.append({"entry": key, "value": text if len(text) <= 240 else text[:237] + "..."})
    return pd.DataFrame(rows, columns=["entry", "value"])


def answers_against_baselines(metrics: pd.DataFrame) -> list[str]:
    """One line per site baseline (nameplate, mean): its 1 s peak beside ours, and ours as a
    share of it. `metrics`: the run's facility_metrics rows (method, level, resolution_s, metric,
    value)."""
    peaks = metrics[(metrics["level"] == "site") & (metrics["resolution_s"] == 1.0)
                    & (metrics["metric"] == "peak_w")].set_index("method")["value"]
    if "ours" not in peaks:
        return []
    ours, lines = float(peaks["ours"]), []
    for baseline in methods.site_baselines():
        theirs = float(peaks.get(baseline.name, float("nan")))
        if theirs > 0:
            unit, scale = power_unit([ours, theirs])
            lines.append(f"{baseline.label} sizes the site at {theirs / scale:.4g} {unit}; the generated traces "
                         f"(ours) peak at {ours / scale:.4g} {unit} (1 s), {100 * ours / theirs:.1f} % of it")
    return lines


def write_site_report(folder: Path | str, sizing: pd.DataFrame, answers: list[str], manifest: dict,
                      metrics: pd.DataFrame) -> Path:
    """A site run's report.html, beside its figures in `folder` (the run's staging folder):
    `sizing` is report.sizing's table (a row per method, column "method"; shown a row per
    number) or a table already laid out for reading, `answers` the lines the run printed,
    `manifest` what manifest.json holds, `metrics` the facility_metrics rows."""
    layout = manifest.get("layout", {})
    hours = manifest.get("bins", 0) * manifest.get("bin_s", 0) / 3600
    n_nodes = layout.get("rows", 0) * layout.get("racks_per_row", 0) * layout.get("nodes_per_rack", 0)
    title = f"Site of {n_nodes} servers: sizing report"
    subtitle = (f"{layout.get('rows')} rows x {layout.get('racks_per_row')} racks x {layout.get('nodes_per_rack')} "
                f"servers, {hours:.2f} h at {manifest.get('bin_s')} s bins, PUE {manifest.get('pue')}, "
                f"seed {manifest.get('seed')}")
    shown = sizing.set_index("method").T if "method" in sizing else sizing
    sections = [("Answers", bullets(answers_against_baselines(metrics) + answers, "answers")),
                ("Sizing table", table(shown, index=True) +
                 "<p>Nameplate: every GPU at its rated power (TDP), which it can exceed; mean: every server at "
                 "its training mean; ours: the generated traces. Above nameplate: the share of bins above the "
                 "nameplate sizing.</p>")]
    if manifest.get("row_sizing"):            # with --row_limit_kw: the answers' spread over random rows
        rows = pd.DataFrame([{"method": methods.label(name)} | record
                             for name, record in manifest["row_sizing"].items()])
        numbers = [c for c in rows.columns if c.endswith("_w") or c == "p_exceed"]
        rows[numbers] = rows[numbers].apply(pd.to_numeric, errors="coerce")     # JSON's null: no value
        sections.append(("Row sizing", table(row_sizing_display(rows, manifest.get("risk_percentile", 95.0)),
                                             index=True) +
                         f"<p>Racks drawn at random for a {manifest.get('row_limit_kw')} kW row: the most whose "
                         f"P{manifest.get('risk_percentile', 95.0):g} row peak (1 s) stays under the limit, and "
                         "how the row peaks spread there.</p>"))
    sections += warnings_section(manifest.get("warnings"))
    sections += [("Figures", figures(folder)),
                 ("Inputs", table(inputs_frame(manifest.get("inputs", {})), css="text")),
                 ("Run", table(settings_frame(manifest, ("inputs", "warnings", "files", "row_sizing")), css="text"))]
    return write_report(folder, title, sections, subtitle)
