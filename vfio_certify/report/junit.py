"""junit.xml written from the results, host by host, as pytest's junitxml plugin writes it (xunit2).

A certification run writes it itself: pytest's plugin keeps an XML node per test in memory to the
end of the run (a thousand hosts, sixty thousand nodes). The content is the same: one testcase per
check, named after its test; a failure carries the check's text (its message "Failed: ..." shortened
as pytest shortens it), a skip says why ([not-collected] or [not-applicable]), a check whose set-up
crashed is an error; the suite's properties carry each host's verdict (an incomplete host, with what
to collect). Plain `pytest checks/ --junitxml=...` keeps pytest's own plugin.
"""
from __future__ import annotations

import platform
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from _pytest.junitxml import bin_xml_escape as _pytest_xml_escape, mangle_test_address, shorten_message

from ..model import HostResult, Outcome, RunResult, describe
from ..result_stream import StreamedCheck

# The characters XML 1.0 forbids (the complement of pytest's allowed set, also DEL), as pytest's bin_xml_escape
# replaces them. pytest's pattern is the allowed set negated, up to U+10FFFF: compiling it takes 4 ms, a tenth of
# the run's reports for one host. This short class finds the text that has any; that text alone goes to pytest's.
_FORBIDDEN_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def bin_xml_escape(text: object) -> str:
    """pytest's bin_xml_escape (each forbidden character written as #xNN), for the text that needs it."""
    text = str(text)
    return _pytest_xml_escape(text) if _FORBIDDEN_IN_XML.search(text) else text


SUITE_NAME = "vfio-certify"


def host_verdict_property(host: HostResult) -> tuple[str, str]:
    finish = host.to_finish()
    return f"verdict {host.host}", host.verdict.value + (f": {finish.text()}" if finish else "")


def testcase(check: StreamedCheck) -> tuple[ET.Element, str]:
    """A check's testcase, and what it counts as: "", "failures", "errors" or "skipped"."""
    result = check.result
    names = mangle_test_address(check.nodeid) if check.nodeid else [result.area, result.id]
    case = ET.Element("testcase", {"classname": ".".join(names[:-1]), "name": bin_xml_escape(names[-1])},
                      time=f"{result.duration_s:.3f}")
    kind = ""
    if result.outcome in (Outcome.FAILED, Outcome.ERROR) and check.when == "setup":
        kind = "errors"
        node = ET.SubElement(case, "error", message=bin_xml_escape(f'failed on setup with "{result.message}"'))
        node.text = bin_xml_escape(result.message)
    elif result.outcome in (Outcome.FAILED, Outcome.ERROR):
        kind = "failures"
        text = describe(result)
        node = ET.SubElement(case, "failure", message=bin_xml_escape(shorten_message(f"Failed: {text}")))
        node.text = bin_xml_escape(text)
    elif result.outcome is Outcome.SKIPPED:
        kind = "skipped"
        reason = f"[{result.to_summary()['skip_reason']}] {result.message}"
        node = ET.SubElement(case, "skipped", type="pytest.skip", message=bin_xml_escape(reason))
        node.text = bin_xml_escape(f"{check.nodeid.split('::', 1)[0]}: {reason}")
    return case, kind


class JunitWriter:
    """Testcases go to a scratch file as each host is written; the suite's header (its counts and the
    hosts' verdicts, known only at the end) is written before them when the run is complete."""

    def __init__(self, path: Path):
        self.path = path
        self.body_path = path.with_name(path.name + ".cases")
        self.body = self.body_path.open("w", encoding="utf-8")
        self.counts = {"errors": 0, "failures": 0, "skipped": 0, "tests": 0}
        self.time = 0.0
        self.properties: list[tuple[str, str]] = []

    def add_host(self, host: HostResult, checks: list[StreamedCheck]) -> None:
        self.properties.append(host_verdict_property(host))
        for check in checks:
            case, kind = testcase(check)
            self.counts["tests"] += 1
            self.time += check.result.duration_s
            if kind:
                self.counts[kind] += 1
            self.body.write(ET.tostring(case, encoding="unicode"))

    def close(self, run: RunResult) -> None:
        self.body.close()
        suite = ET.Element("testsuite", {"name": SUITE_NAME, **{k: str(v) for k, v in self.counts.items()}},
                           time=f"{run.duration_s:.3f}", timestamp=run.started_at, hostname=platform.node())
        properties = ET.SubElement(suite, "properties")
        for name, value in self.properties:
            ET.SubElement(properties, "property", name=name, value=bin_xml_escape(value))
        head = ET.tostring(suite, encoding="unicode")
        head = head[:-len("</testsuite>")] if head.endswith("</testsuite>") else head
        with self.path.open("w", encoding="utf-8") as out:
            out.write('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">' + head)
            with self.body_path.open(encoding="utf-8") as body:
                shutil.copyfileobj(body, out)
            out.write("</testsuite></testsuites>")
        self.body_path.unlink()

    def abandon(self) -> None:
        self.body.close()
        self.body_path.unlink(missing_ok=True)

