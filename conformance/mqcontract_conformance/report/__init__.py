"""``mqcontract report``: the compatibility report, generated from result JSONs.

:func:`build_report` writes ``compatibility.md``, ``compatibility.html``,
``compatibility.json``, ``badges/<provider>.svg`` and, when the Allure tool is installed,
``allure/index.html``. The first four are a pure function of the input files, so
regenerating from the same results reproduces them byte for byte.
"""

from __future__ import annotations

from mqcontract_conformance.report.build import ReportOptions, badge_name, build_report
from mqcontract_conformance.report.documents import ReportError
from mqcontract_conformance.report.model import Matrix, build_matrix, load_results

__all__ = [
    "Matrix",
    "ReportError",
    "ReportOptions",
    "badge_name",
    "build_matrix",
    "build_report",
    "load_results",
]
