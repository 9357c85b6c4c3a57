"""pytest-html's report.html: host and severity columns, evidence and remediation beside each check."""
from __future__ import annotations

import pytest
from markupsafe import escape

from ..model import result_of


class HtmlColumns:
    """Registered by plugin.py when pytest-html is loaded."""

    def pytest_html_results_table_header(self, cells: list) -> None:
        cells.insert(1, "<th>Host</th>")
        cells.insert(2, '<th class="sortable" data-column-type="severity">Severity</th>')

    def pytest_html_results_table_row(self, report, cells: list) -> None:
        props = dict(getattr(report, "user_properties", []))
        # pytest-html puts the raw test id (host names, snapshot paths: untrusted) into its cell, and
        # its app.js inserts cells with innerHTML: escape it.
        start, end = '<td class="col-testId">', "</td>"
        for index, cell in enumerate(cells):
            if isinstance(cell, str) and cell.startswith(start) and cell.endswith(end):
                cells[index] = f"{start}{escape(cell[len(start):-len(end)])}{end}"
        cells.insert(1, f"<td>{escape(props.get('host', ''))}</td>")
        cells.insert(2, f"<td>{escape(props.get('severity', ''))}</td>")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        result = result_of(report)
        if result is None:
            return
        from pytest_html import extras

        def text(value: str) -> str:  # str(), not Markup: Markup + str would escape our own tags
            return str(escape(value))

        parts = [f"<p><b>{text(result.outcome.value)}</b> ({text(result.severity.value)}): {text(result.message)}</p>"]
        if result.evidence:
            parts.append("<p>Evidence:</p><pre>" + text("\n".join(result.evidence)) + "</pre>")
        if result.remediation:
            parts.append("<p>Fix:</p><pre>" + text(result.remediation) + "</pre>")
        report.extras = getattr(report, "extras", []) + [extras.html("".join(parts))]
