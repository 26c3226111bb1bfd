"""model/nameplate.py: nameplate is reported as what it is, a rating that measured watts exceed."""
from __future__ import annotations

import numpy as np
import pytest

from model.generation import methods
from model.nameplate import above_nameplate, summary_line


def test_the_share_above_nameplate_counts_every_bin_of_every_trace():
    traces = [np.array([390.0, 410.0, 400.0, 420.0]), np.array([100.0] * 6)]
    report = above_nameplate(traces, 0.25, 400.0)
    assert report["share_above_nameplate"] == pytest.approx(2 / 10)     # 400 W itself is not above
    assert report["nameplate_w"] == 400.0


def test_peaks_are_the_highest_window_means_at_each_resolution():
    # 0.25 s bins: one 600 W spike in an otherwise 300 W minute, then a second of 500 W
    watts = np.full(480, 300.0)
    watts[10] = 600.0
    watts[240:244] = 500.0
    report = above_nameplate([watts], 0.25, 400.0)
    assert report["peak_0.25s_w"] == 600.0
    assert report["peak_1s_w"] == 500.0                     # the spike's second averages 375 W
    assert report["peak_60s_w"] == pytest.approx(300.0 + 4 * 200.0 / 240)   # the spike's minute: 301.25 W
    assert "peak 0.25 s 600 W, 1 s 500 W, 60 s 303 W" in summary_line(report)


def test_a_resolution_the_bins_or_traces_cannot_give_is_none_not_made_up():
    report = above_nameplate([np.full(30, 300.0)], 1.0, 400.0)      # 1 s bins, 30 s of them
    assert report["peak_0.25s_w"] is None and report["peak_1s_w"] == 300.0 and report["peak_60s_w"] is None
    assert "0.25 s" not in summary_line(report)


def test_tables_call_tdp_nameplate_never_a_maximum():
    label = methods.label("tdp")
    assert "nameplate" in label.lower() and not any(word in label.lower() for word in ("max", "ceiling", "limit"))
