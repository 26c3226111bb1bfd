"""The paper's LaTeX tables, written one way (booktabs): the training table, the generation
table (`table*`, across both columns of a two-column page) and the site tables (`table`, one
column). Each fits its width in `\\documentclass[twocolumn]{article}` (tests compile them and
look for "Overfull \\hbox" in pdflatex's log)."""
from __future__ import annotations

import re

# LaTeX's special characters as text: a label is printed, never run (`\input`, `~`, `^`, ...)
_LATEX_TEXT = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               **{c: "\\" + c for c in "&%$#_{}"}}


def latex_text(text: str) -> str:
    """`text` as literal LaTeX text on one line: special characters escaped, line breaks and
    other control characters made spaces."""
    text = re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text)
    return re.sub(r"[\\~^&%$#_{}]", lambda m: _LATEX_TEXT[m.group()], text)


def two_lines(first: str, second: str) -> str:
    """A header cell of two lines (plain LaTeX, no package): a long header that would widen
    its column past the page."""
    return r"\begin{tabular}[b]{@{}c@{}}" + first + r"\\" + second + r"\end{tabular}"


def booktabs_table(caption: str, label: str, headers: list[str], rows: list, left_columns: int = 1,
                   wide: bool = True) -> str:
    """A `table*` (both columns of a two-column page; `wide=False`: a `table`, one column) of
    `headers` over `rows`: each row a list of cells, or a string put in as it is (a \\midrule
    between groups). The first `left_columns` columns are left-aligned, the rest centred. Cells
    and headers are LaTeX already."""
    env = "table*" if wide else "table"
    size = [r"\small"] if wide else [r"\footnotesize", r"\setlength{\tabcolsep}{4pt}"]
    lines = [r"\begin{" + env + "}[!htb]", r"\centering", *size, r"\caption{" + caption + "}",
             r"\label{" + label + "}", r"\vspace{0.4em}",
             r"\begin{tabular}{" + "l" * left_columns + "c" * (len(headers) - left_columns) + "}",
             r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [row if isinstance(row, str) else " & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{" + env + "}"]
    return "\n".join(lines) + "\n"
