"""LaTeX: one ``table`` float per table to ``\\input`` into a paper (booktabs rules,
``\\caption`` above, the marked best value of a column in bold)."""

from __future__ import annotations

from mkdt_bench.report.formats.base import FORMATS, TablesFormat
from mkdt_bench.report.tables import Table

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_escape(text: object) -> str:
    """``text`` with LaTeX's special characters escaped (``±`` as math)."""
    return "".join(_LATEX.get(char, char) for char in str(text))


def table_float(table: Table) -> str:
    """A ``table`` float: booktabs rules, the caption, bold for :attr:`Table.bold`."""
    cells = table.cells
    head = " & ".join([latex_escape(cells.index.name or ""),
                       *(latex_escape(c) for c in cells.columns)]) + r" \\"
    body = []
    for row, values in cells.iterrows():
        texts = []
        for column, value in values.items():
            text = latex_escape(value)
            texts.append(rf"\textbf{{{text}}}" if (row, column) in table.bold else text)
        body.append(" & ".join([latex_escape(row), *texts]) + r" \\")
    spec = "l" + "r" * len(cells.columns)
    return "\n".join([r"\begin{table}[ht]", r"\centering",
                      rf"\caption{{{latex_escape(table.caption)}}}",
                      rf"\begin{{tabular}}{{{spec}}}", r"\toprule", head, r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", r"\end{table}"])


@FORMATS.register("latex")
class Latex(TablesFormat):
    """``table`` floats (needs ``\\usepackage{booktabs}``); the captions name the source."""

    empty = "% no results"

    def tables(self, tables: list[Table]) -> str:
        return "\n\n".join(table_float(t) for t in tables)
