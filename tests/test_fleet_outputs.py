"""What a run of several hosts writes, host by host from the results streamed to disk: a page per host,
the fleet page first, junit.xml as pytest's own plugin writes it, summary.json as json.dump writes it."""
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vfio_certify.report.outputs import page_names

REPO = Path(__file__).resolve().parent.parent
HOSTS = REPO / "fixtures" / "hosts"
EVIL = "<img src=x onerror=alert(1)>"
# fixture -> verdict with device 07:00.1 named (tests/test_verdicts.py has them without a device)
FLEET = ["rocky9-after-intel-iommu", "amd-g505s-no-ivrs", "missing-config"]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    snapshots = []
    for i, name in enumerate(FLEET):
        folder = tmp / (f"{i}-{EVIL}" if i == 1 else f"{i}") / name  # a hostile path: the page name is made safe
        shutil.copytree(HOSTS / name, folder, symlinks=True)
        snapshots.append(folder)
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--output", str(out), "--device", "07:00.1",
                           *[f"--snapshot={s}" for s in snapshots]], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out, [str(s) for s in snapshots], json.loads((out / "summary.json").read_text())


def test_each_host_has_its_own_page_that_loads_alone(fleet_run):
    out, names, summary = fleet_run
    pages = sorted((out / "hosts").iterdir())
    assert [p.name for p in pages] == sorted(page_names(names).values())
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", p.name) for p in pages)
    for host in summary["hosts"]:
        page = (out / "hosts" / page_names(names)[host["host"]]).read_text()
        assert "— 1 host —" in page and 'href="../index.html"' in page  # one host, and the way back to the fleet
        verdict = {"certified": "CERTIFIED for device assignment", "not-certified": "NOT CERTIFIED",
                   "incomplete": "INCOMPLETE"}[host["verdict"]]
        assert verdict in page
        assert not re.search(r'<(script|link|iframe)\b|src="http', page)  # nothing else to load
        assert EVIL not in page
        others = [h["host"] for h in summary["hosts"] if h["host"] != host["host"]]
        assert not any(f">{other}<" in page for other in others)


def test_the_fleet_page_links_the_host_pages_failing_hosts_first(fleet_run):
    out, names, summary = fleet_run
    index = (out / "index.html").read_text()
    linked = re.findall(r'<td class="host"><a href="hosts/([^"]+)">', index)
    by_page = {page_names(names)[h["host"]]: h["verdict"] for h in summary["hosts"]}
    assert sorted(linked) == sorted(by_page)
    order = ["not-certified", "incomplete", "unreachable", "certified"]
    assert [order.index(by_page[p]) for p in linked] == sorted(order.index(by_page[p]) for p in linked)
    assert by_page[linked[-1]] == "certified" and by_page[linked[0]] == "not-certified"
    assert (out / "certification.html").read_text() == index  # several hosts: the fleet page, not one giant page
    assert "certification.html#host-" not in index


def test_report_html_lists_what_needs_attention_escaped(fleet_run):
    out, names, summary = fleet_run
    report = (out / "report.html").read_text()
    attention = [c for h in summary["hosts"] for c in h["checks"]
                 if c["outcome"] != "passed" and c.get("skip_reason") != "not-applicable"]
    assert report.count('<tr class="row-') == len(attention) > 0
    assert EVIL not in report and "&lt;img src=x onerror=alert(1)&gt;" in report
    for host in {h["host"] for h in summary["hosts"] if any(c in attention for c in h["checks"])}:
        assert f'<td class="col-host"><a href="hosts/{page_names(names)[host]}">' in report  # to every check


def test_summary_json_is_written_as_json_dump_writes_it(fleet_run):
    out, _, summary = fleet_run
    assert (out / "summary.json").read_text() == json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    overview = json.loads((out / "overview.json").read_text())
    assert (out / "overview.json").read_text() == json.dumps(overview, indent=2, ensure_ascii=False) + "\n"
    assert set(overview["hosts"]) == {h["host"] for h in summary["hosts"]}


def _cases(path: Path) -> tuple[dict, list, dict]:
    suite = ET.parse(path).getroot().find("testsuite")
    cases = {}
    for case in suite.iter("testcase"):
        # the text of a skip is where pytest raised it (a line of plugin.py) in pytest's file: left out
        cases[(case.get("classname"), case.get("name"))] = [
            (k.tag, k.get("message"), k.get("type"), None if k.tag == "skipped" else k.text) for k in case]
    properties = [(p.get("name"), p.get("value")) for p in suite.iter("property")]
    counts = {k: suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped")}
    return cases, properties, counts


def test_junit_written_from_the_results_says_what_pytests_own_says(fleet_run, tmp_path):
    out, names, _ = fleet_run
    theirs = tmp_path / "pytest-junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "checks"), "-p", "no:cacheprovider", "-q",
                           "--tb=no", "--device", "07:00.1", *[f"--snapshot={n}" for n in names],
                           f"--junitxml={theirs}", "-o", "junit_family=xunit2", "-o", "junit_suite_name=vfio-certify"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    ours, pytests = _cases(out / "junit.xml"), _cases(theirs)
    assert ours[0] == pytests[0] and len(ours[0]) > 60
    assert ours[1] == pytests[1] and len(ours[1]) == len(FLEET)  # each host's verdict
    assert ours[2] == pytests[2]


def test_page_names_are_safe_distinct_and_never_hidden():
    names = ["ssh://root@kvm1:22", "../../etc/passwd", EVIL, "KVM1", "kvm1", ".hidden", "", "a" * 300]
    pages = page_names(names)
    assert len(set(p.casefold() for p in pages.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.html", p) and len(p) <= 90 for p in pages.values())
    assert pages["../../etc/passwd"] == "etc_passwd.html" and pages[""] == "host.html"
