"""The paper's LaTeX tables, written one way (booktabs `table*`): the training table, the
generation table and the site sizing table."""
from __future__ import annotations


def booktabs_table(caption: str, label: str, headers: list[str], rows: list, left_columns: int = 1) -> str:
    """A `table*` of `headers` over `rows`: each row a list of cells, or a string put in as it
    is (a \\midrule between groups). The first `left_columns` columns are left-aligned, the rest
    centred. Cells and headers are LaTeX already."""
    lines = [r"\begin{table*}[!htb]", r"\centering", r"\small", r"\caption{" + caption + "}",
             r"\label{" + label + "}", r"\vspace{0.4em}",
             r"\begin{tabular}{" + "l" * left_columns + "c" * (len(headers) - left_columns) + "}",
             r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [row if isinstance(row, str) else " & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"
