"""report.html: one self-contained file holding a run's sizing table, answers, warnings and inputs."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pandas as pd

from model.sites import report
from model.sites.html_report import write_site_report
from test_facility import _site


class Page(HTMLParser):
    """What a browser would fetch (src, href) and the text of each table cell and list item."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.cells, self.items, self._open = [], [], [], None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href", "srcset", "data")]
        if tag in ("td", "th", "li"):
            self._open = (tag, [])

    def handle_data(self, data):
        if self._open:
            self._open[1].append(data)

    def handle_endtag(self, tag):
        if self._open and tag == self._open[0]:
            (self.items if tag == "li" else self.cells).append("".join(self._open[1]).strip())
            self._open = None


def test_a_site_report_is_self_contained_and_holds_the_sizing_table_and_inputs(tiny_results, tmp_path):
    out = tmp_path / "out"
    assert _site(tiny_results, out, "--rate_per_node", "1", "--duration", "60", "--row_limit_kw", "5") == 0
    page = Page((out / "report.html").read_text())
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links)
    assert len(page.links) == len(list(out.glob("*.png")))                # every figure, embedded
    shown = report.sizing_display(pd.read_csv(out / "sizing_table.csv"))      # as the run printed it
    for label, row in shown.iterrows():                # every number of the sizing table, labelled
        assert label in page.cells and set(row) <= set(page.cells), label
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["m_h_tp1"]["sha256"] in page.cells
    assert any(item.startswith("Nameplate (TDP) sizes the site at") for item in page.items)
    assert any(item.startswith("racks per 5 kW row") and ": ours " in item for item in page.items)
    rows = report.row_sizing_display(pd.read_csv(out / "row_sizing.csv"), 95.0)     # the row sizing's spread
    for label, row in rows.iterrows():
        assert label in page.cells and set(row) <= set(page.cells), label


def test_the_manifests_warnings_are_shown_escaped_and_none_is_no_section(tmp_path):
    sizing = pd.DataFrame([{"method": "Nameplate (TDP)", "Peak 1 s (MW)": 2.0},
                           {"method": "Ours", "Peak 1 s (MW)": 1.5}])
    metrics = pd.DataFrame([(method, "site", 1.0, "peak_w", watts) for method, watts in (("tdp", 2e6), ("ours", 1.5e6))],
                           columns=["method", "level", "resolution_s", "metric", "value"])
    warned = {"warnings": ["m_h_tp1: energy error 10.6 % > 5 % <b>"], "inputs": {}}
    page = write_site_report(tmp_path, sizing, [], warned, metrics).read_text()
    assert "energy error 10.6 % &gt; 5 % &lt;b&gt;" in page and "<h2>Warnings</h2>" in page
    assert "Ours" in Page(page).cells and "Peak 1 s (MW)" in Page(page).cells
    assert "Nameplate (TDP) sizes the site at 2 MW; the generated traces (ours) peak at 1.5 MW (1 s), 75.0 % of it" \
        in Page(page).items
    assert "<h2>Warnings</h2>" not in write_site_report(tmp_path, sizing, [], {"inputs": {}}, metrics).read_text()


def test_the_same_run_gives_the_same_report_bytes(tiny_results, tmp_path):
    for name in ("a", "b"):
        assert _site(tiny_results, tmp_path / name, "--rate_per_node", "1", "--duration", "60", "--seed", "4") == 0
    assert (tmp_path / "a" / "report.html").read_bytes() == (tmp_path / "b" / "report.html").read_bytes()
