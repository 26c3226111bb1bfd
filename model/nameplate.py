"""How far watts go past nameplate: a GPU's TDP is its rated board power, not a ceiling.

    report = above_nameplate([trace.power for trace in train], bin_s=0.25, nameplate_w=4 * 400.0)
    # {"nameplate_w": 1600.0, "share_above_nameplate": 0.031, "peak_0.25s_w": ..., "peak_1s_w": ...,
    #  "peak_60s_w": ...}

A measured A100 (400 W nameplate) draws more than 400 W in a few percent of its 0.25 s samples;
training data, every generated trace and every site report this, so nobody reads nameplate as
the most a server can draw. The peaks are means over consecutive windows of 0.25 s, 1 s and
1 min, as the site's resolutions (model/sites/rollup.py; features.window_means); a window the trace does not fill is
left out, and a resolution that is not a whole number of bins, or longer than every trace, is
None. Pure numpy: commands that only report import it without torch.
"""
from __future__ import annotations

import numpy as np

from model.features import window_means

PEAK_RESOLUTIONS_S = (0.25, 1.0, 60.0)


def peak_key(resolution_s: float) -> str:
    return f"peak_{resolution_s:g}s_w"


def peak_at(traces: list[np.ndarray], bin_s: float, resolution_s: float) -> float | None:
    """The highest mean over consecutive windows of `resolution_s` in any of the traces."""
    factor = resolution_s / bin_s
    if abs(factor - round(factor)) > 1e-9 or round(factor) < 1:
        return None
    factor = int(round(factor))
    peaks = [window_means(t[:len(t) - len(t) % factor], factor).max() for t in traces if len(t) >= factor]
    return float(max(peaks)) if peaks else None


def above_nameplate(traces: list[np.ndarray], bin_s: float, nameplate_w: float) -> dict:
    """The share of all bins above `nameplate_w` and the peaks at 0.25 s, 1 s and 1 min."""
    traces = [np.asarray(t, dtype=np.float64) for t in traces]
    bins = sum(len(t) for t in traces)
    above = sum(int((t > nameplate_w).sum()) for t in traces)
    return {"nameplate_w": float(nameplate_w), "bin_s": float(bin_s),
            "share_above_nameplate": above / bins if bins else float("nan"),
            **{peak_key(r): peak_at(traces, bin_s, r) for r in PEAK_RESOLUTIONS_S}}


def summary_line(report: dict) -> str:
    """`report` in a few words, for a command's output."""
    peaks = ", ".join(f"{r:g} s {report[peak_key(r)]:.0f} W" for r in PEAK_RESOLUTIONS_S
                      if report.get(peak_key(r)) is not None)
    return (f"{100 * report['share_above_nameplate']:.1f} % of bins above the {report['nameplate_w']:.0f} W "
            f"nameplate (TDP; not a ceiling); peak {peaks}")
