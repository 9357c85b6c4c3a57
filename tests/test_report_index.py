"""The fleet index page (index.html): a host x area matrix with regressions against a baseline first."""
from __future__ import annotations

import dataclasses
import re
import time

import pytest

from support import chromium

from vfio_certify.diff import HostDiff, RunDiff, RunRecord, diff_runs
from vfio_certify.model import CheckResult, DeviceView, GroupView, HostOverview, HostResult, Outcome, RunResult, Severity
from vfio_certify.report.outputs import overviews_of
from vfio_certify.report.html import index_rows, render_index_page, write_index_page

XSS = "<script>alert(1)</script>"
P, F, E, W, S, V = Outcome.PASSED, Outcome.FAILED, Outcome.ERROR, Outcome.WARNING, Outcome.SKIPPED, Outcome.WAIVED
REQ, REC, INFO = Severity.REQUIRED, Severity.RECOMMENDED, Severity.INFO


def c(check_id, outcome=P, severity=REQ, message="ok"):
    return CheckResult(check_id, outcome, severity, message)


def healthy_checks():
    return [
        c("host.reachable"), c("cpu.virtualization"), c("kvm.device"), c("kernel.cmdline", severity=REC),
        c("kernel.config"), c("firmware.iommu_table"), c("iommu.enabled"), c("iommu.groups", severity=INFO),
        c("iommu.irq_remapping"), c("vfio.module"), c("vfio.device_node"),
        c("device.present[0000:07:00.0]"), c("device.live_migration[0000:07:00.0]", S, INFO, "not asked"),
    ]


def with_outcomes(checks, **changes):
    """checks with some ids' outcome (and message) replaced: iommu_enabled=(F, "msg")."""
    out = []
    for check in checks:
        key = check.id.split("[")[0].replace(".", "_")
        if key in changes:
            outcome, message = changes[key]
            check = dataclasses.replace(check, outcome=outcome, message=message)
        out.append(check)
    return out


def overview(kernel="5.14.0-427.el9", cmdline="ro intel_iommu=on", driver="vfio-pci", shared=False):
    devices = [DeviceView("0000:07:00.0", "0x020000", "Ethernet controller", "8086:1521", "I350", driver, False, True)]
    if shared:  # the other port joined the group
        devices.append(DeviceView("0000:07:00.1", "0x020000", "Ethernet controller", "8086:1521", "I350", "igb",
                                  False, False))
    return HostOverview(hostname="h", kernel_release=kernel, cmdline=cmdline,
                        groups=[GroupView(12 if shared else 47, devices, not shared)])


def baseline_run() -> RunResult:
    return RunResult("2026-11-23T02:00:00Z", 610.0, [
        HostResult(name, "ssh", healthy_checks(), overview())
        for name in ("kvm-a", "kvm-b", "kvm-c", "kvm-d", "kvm-e", "kvm-gone")
    ])


def tonight_run() -> RunResult:
    hosts = [
        # certified, unchanged
        HostResult("kvm-a", "ssh", healthy_checks(), overview()),
        # regression: a kernel update dropped intel_iommu=on; the IOMMU is off
        HostResult("kvm-b", "ssh", with_outcomes(
            healthy_checks(), iommu_enabled=(F, "the IOMMU is not enabled"),
            iommu_irq_remapping=(E, "could not read /sys/class/iommu"), kernel_cmdline=(W, "no intel_iommu=on")),
            overview(kernel="5.14.0-503.el9", cmdline="ro", driver="igb", shared=True)),
        # not certified in the baseline already: not a regression (here it was certified; make it fail in both)
        HostResult("kvm-c", "ssh", with_outcomes(healthy_checks(), vfio_module=(V, "waived: lab box")), overview()),
        # unreachable tonight: a regression (verdict got worse)
        HostResult("kvm-d", "ssh", [c("host.reachable", F, REQ, "could not be collected")], HostOverview(),
                   unreachable_reason="ssh: connect to host kvm-d port 22: No route to host"),
        # changed, not a regression: driver moved, still certified
        HostResult("kvm-e", "ssh", healthy_checks(), overview(driver="igb")),
        # new host, not certified: a recommended failure does not block, a required one does
        HostResult(f"kvm-new{XSS}", "snapshot", with_outcomes(
            healthy_checks(), cpu_virtualization=(F, f"VMX off {XSS}"), kernel_cmdline=(F, "pcie_acs_override")),
            overview()),
    ]
    return RunResult("2026-11-24T02:00:00Z", 3725.5, hosts)


def record(source, run):
    return RunRecord(source, run.to_summary(), overviews_of(run))


@pytest.fixture(scope="module")
def run():
    return tonight_run()


@pytest.fixture(scope="module")
def diff(run):
    return diff_runs(record("/srv/certify/2026-11-23", baseline_run()), record("/srv/certify/2026-11-24", run))


@pytest.fixture(scope="module")
def page(run, diff):
    return render_index_page(run, diff)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def rows_of(page):
    """host (escaped, as in the page) -> its <tr> HTML, in page order."""
    rows = re.findall(r'<tr class="row [^"]*" id="row-\d+">(.*?)</tr>', page, re.S)
    return {re.search(r'<td class="host"><a [^>]*>(.*?)</a>', r, re.S).group(1): r for r in rows}


def cells_of(row):
    """area -> (css classes, visible text) for each matrix cell of one row."""
    cells = re.findall(r'<td class="cell ([^"]*)" title="([^":]*):[^"]*">(.*?)</td>', row, re.S)
    return {area: (css, _text(body).strip()) for css, area, body in cells}


def test_header_counts_and_regression_line(page):
    text = _text(page)
    assert "2026-11-24T02:00:00Z" in text and "3725.50 s" in text and "(1 h 2 min 5 s)" in text
    assert "Hosts 6" in text
    assert "3 certified · 2 not certified · 0 incomplete · 1 unreachable" in text
    # kvm-gone, in the baseline only, is a regression too: a host that was not collected tonight
    assert "3 hosts regressed since /srv/certify/2026-11-23 (1 no longer in the run)" in text
    assert "1 more changed · 1 new host — see" in text


def test_one_row_per_host_with_link_and_verdict(page, run):
    rows = rows_of(page)
    assert len(rows) == len(run.hosts) == 6
    for position, host in enumerate(run.hosts, 1):
        assert f'<a href="certification.html#host-{position}">' in page
    assert 'href="certification.html#host-2">kvm-b</a>' in page
    assert "✘ NOT CERTIFIED" in rows["kvm-b"] and "✔ certified" in rows["kvm-a"]
    assert "⚠ UNREACHABLE" in rows["kvm-d"]


def test_area_columns_in_checklist_order(page):
    header = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    areas = re.findall(r'<th class="area" scope="col">(\w+)<', header)
    assert areas == ["host", "cpu", "kvm", "kernel", "firmware", "iommu", "vfio", "device"]
    assert "Since baseline" in header
    # how many reachable hosts fail each area: cpu and kernel (kvm-new), iommu (kvm-b); kvm-b's kernel only warns
    for area in ("cpu", "kernel", "iommu"):
        assert f'>{area}<span class="hosts-bad">1 failing</span>' in header
    assert '>host<span class="hosts-ok">' in header  # the unreachable host is not counted


def test_worst_outcome_per_area(page):
    rows = rows_of(page)
    a, b, c_, new = (cells_of(rows[h]) for h in ("kvm-a", "kvm-b", "kvm-c", f"kvm-new{XSS}".replace("<", "&lt;").replace(">", "&gt;")))
    # all passed; device has passed + skipped: passed is worse than skipped
    assert all(css == "c-passed" for css, _ in a.values())
    assert a["device"] == ("c-passed", "✔ PASS 1✔ 1–")
    assert a["vfio"] == ("c-passed", "✔ PASS 2✔")
    # iommu: failed (required) + error + passed -> FAIL, marked as blocking, with counts
    assert b["iommu"] == ("c-failed blocking", "✘ FAIL BLOCKS 1✘ 1‼ 1✔")
    # kernel: a recommended warning only -> WARN, not blocking
    assert b["kernel"] == ("c-warning", "▲ WARN 1▲ 1✔")
    # waived beats passed
    assert c_["vfio"] == ("c-waived", "◇ WAIVED 1◇ 1✔")
    # a recommended failure is a FAIL but does not block; a required one blocks
    assert new["kernel"] == ("c-failed", "✘ FAIL 1✘ 1✔")
    assert new["cpu"] == ("c-failed blocking", "✘ FAIL BLOCKS 1✘")


def test_error_is_worse_than_warning():
    run = RunResult("t", 0, [HostResult("h", "local", [c("iommu.a", W, REC), c("iommu.b", E, REC), c("iommu.c", P)])])
    cells = cells_of(next(iter(rows_of(render_index_page(run)).values())))
    assert cells["iommu"] == ("c-error", "‼ ERROR 1‼ 1▲ 1✔")  # a recommended error: not blocking


def test_sort_regressions_first_then_verdict_then_name(page):
    order = list(rows_of(page))
    new = f"kvm-new{XSS}".replace("<", "&lt;").replace(">", "&gt;")
    # regressions (kvm-b, kvm-d), not certified (new host), unreachable (none left), certified (a, c, e)
    assert order == ["kvm-b", "kvm-d", new, "kvm-a", "kvm-c", "kvm-e"]


def test_since_baseline_column(page):
    rows = rows_of(page)
    assert "REGRESSION" in rows["kvm-b"] and "row-regression" in page.split('id="row-2"')[0].rsplit("<tr", 1)[1]
    since_b = re.search(r'<td class="since since-regression">(.*?)</td>', rows["kvm-b"], re.S).group(1)
    assert '<span class="vchange">certified → not-certified</span>' in since_b
    lines = re.findall(r"<li class=\"k-(\w+)\">(.*?)</li>", since_b)
    assert lines[0] == ("failing", "newly failing: iommu.enabled (passed -&gt; failed): the IOMMU is not enabled")
    assert lines[1][0] == "failing" and "iommu.irq_remapping" in lines[1][1]
    assert len(lines) == 2 and '<a href="#changes-2">+5 more</a>' in since_b  # the rest: the changes section
    assert "REGRESSION" in rows["kvm-d"] and "certified → unreachable" in rows["kvm-d"]
    assert '<span class="tag tag-changed">changed</span>' in rows["kvm-e"]
    assert "driver: 0000:07:00.0: vfio-pci -&gt; igb" in rows["kvm-e"]
    assert '<td class="since since-unchanged">' in rows["kvm-a"] and "REGRESSION" not in rows["kvm-a"]
    new = f"kvm-new{XSS}".replace("<", "&lt;").replace(">", "&gt;")
    assert "new host" in rows[new]


def test_changes_section(page):
    section = page.split('<section class="changes" id="changes">', 1)[1]
    text = _text(section)
    assert section.index('id="changes-2"') < section.index('id="changes-4"') < section.index('id="changes-5"')
    b = section.split('id="changes-2"', 1)[1].split("</article>", 1)[0]
    for expected in ("newly failing: iommu.enabled (passed -&gt; failed): the IOMMU is not enabled",
                     "newly failing: iommu.irq_remapping (passed -&gt; error)",
                     "kernel: 5.14.0-427.el9 -&gt; 5.14.0-503.el9",
                     "command line lost: intel_iommu=on",
                     "IOMMU group: 0000:07:00.0: group 47 -&gt; 12; now shares it with 0000:07:00.1",
                     "driver: 0000:07:00.0: vfio-pci -&gt; igb"):
        assert expected in b, expected
    assert "REGRESSION" in b and 'href="certification.html#host-2"' in b
    assert "New hosts (not in the baseline): kvm-new&lt;script&gt;" in text
    assert "REGRESSION No longer in the run (in the baseline only): kvm-gone" in text
    assert 'id="changes-1"' not in section  # kvm-a did not change


def test_unreachable_reason_spans_the_area_cells(page):
    row = rows_of(page)["kvm-d"]
    assert '<td class="unreach" colspan="8">' in row
    assert "ssh: connect to host kvm-d port 22: No route to host" in row
    assert 'class="cell' not in row


def test_host_text_is_escaped_and_there_is_no_script(page):
    assert "<script" not in page.lower()
    assert "kvm-new&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_without_a_diff_there_is_no_baseline_column():
    page = render_index_page(tonight_run())
    assert "Since baseline" not in page and 'id="changes"' not in page and "regressed" not in page
    order = list(rows_of(page))
    assert order[:2] == ["kvm-b", "kvm-new&lt;script&gt;alert(1)&lt;/script&gt;"]  # not certified first
    assert order[2] == "kvm-d"  # then unreachable, then certified
    assert "<script" not in page.lower()


def test_hand_built_host_diff_and_no_regression():
    run = RunResult("t", 1.0, [HostResult("solo", "local", healthy_checks())])
    diff = RunDiff("old", "new", [HostDiff("solo", "certified", "certified", kernel=("6.1", "6.8"))])
    page = render_index_page(run, diff)
    text = _text(page)
    assert "No host regressed since old" in text and "1 more changed" in text
    assert "kernel: 6.1 -&gt; 6.8" in page and "changed" in rows_of(page)["solo"]
    assert [r.since for r in index_rows(run, diff)] == ["changed"]


def test_empty_run_and_host_without_checks():
    assert "No host was given" in render_index_page(RunResult("t"))
    page = render_index_page(RunResult("t", hosts=[HostResult("bare", "local")]))
    assert 'href="certification.html#host-1">bare</a>' in page and "✔ certified" in page


def test_two_hundred_hosts_render_quickly():
    hosts = []
    for i in range(200):
        checks = healthy_checks()
        if i % 17 == 0:
            checks = with_outcomes(checks, iommu_enabled=(F, "the IOMMU is not enabled"))
        unreachable = "timed out" if i % 50 == 7 else ""
        hosts.append(HostResult(f"kvm{i:03d}.dc1.example.com", "ssh", [] if unreachable else checks, overview(),
                                unreachable_reason=unreachable))
    big = RunResult("2026-11-24T02:00:00Z", 5400.0, hosts)
    old = RunResult("2026-11-23T02:00:00Z", 5300.0, [HostResult(h.host, "ssh", healthy_checks(), overview())
                                                     for h in hosts])
    diff = diff_runs(record("night-1", old), record("night-2", big))
    begin = time.monotonic()
    page = render_index_page(big, diff)
    assert time.monotonic() - begin < 2.0
    assert len(rows_of(page)) == 200
    assert "16 hosts regressed since night-1" in _text(page)  # 12 with the IOMMU off, 4 unreachable
    assert len(page) < 1_500_000


def test_rows_come_in_blocks_a_browser_lays_out_only_when_in_view():
    """A thousand rows in one table were laid out again each time the parser gave way (1.0-1.2 s in Chromium):
    the rows come in blocks of at most 50, each a table with the same columns in a content-visibility block, and a
    group (regressions, not certified, ..., certified) starts a block of its own."""
    hosts = [HostResult(f"kvm{i:03d}", "ssh", with_outcomes(healthy_checks(), iommu_enabled=(F, "off"))
                        if i < 70 else healthy_checks(), overview()) for i in range(130)]
    page = render_index_page(RunResult("t", 1.0, hosts))
    blocks = re.findall(r'<div class="rows( group-start)?" style="contain-intrinsic-size: auto (\d+)px">(.*?)</div>',
                        page, re.S)
    sizes = [len(re.findall(r'<tr class="row ', block)) for _, _, block in blocks]
    assert sizes == [50, 20, 50, 10]  # 70 not certified, then 60 certified
    assert [bool(start) for start, _, _ in blocks] == [False, False, True, False]
    columns = {re.search(r"<colgroup>.*?</colgroup>", block, re.S).group(0) for _, _, block in blocks}
    head = re.search(r'<div class="matrix-head"><table class="matrix">(<colgroup>.*?</colgroup>)', page, re.S).group(1)
    assert columns == {head} and head.count("<col ") == 2 + 8  # host, fix plan, one per area
    assert sum(sizes) == len(rows_of(page)) == 130
    assert "div.rows { content-visibility: auto; }" in page and "table-layout: fixed" in page


def test_the_page_streamed_to_its_file_is_the_page_rendered(tmp_path, run, diff):
    """A fleet's index.html is written piece by piece, never one string: the same bytes."""
    path = write_index_page(run, diff, tmp_path / "index.html")
    assert path.read_bytes() == render_index_page(run, diff).encode("utf-8")
    assert "Fleet certification — 6 hosts" in _text(path.read_text(encoding="utf-8"))


def test_chromium_renders_the_page(tmp_path, run, diff):
    page = write_index_page(run, diff, tmp_path / "out" / "index.html")
    dom, _ = chromium.render(page, tmp_path, window="1400,1000")
    assert 'class="matrix"' in dom and "REGRESSION" in dom and "No route to host" in dom
    assert "<script" not in dom.lower()


def test_a_diff_without_overviews_says_what_was_not_compared():
    run = RunResult("t", 1.0, [HostResult("solo", "local", healthy_checks(), overview())])
    baseline = RunRecord("old", run.to_summary(), {}, "old/overview.json: missing")
    text = _text(render_index_page(run, diff_runs(baseline, record("new", run))))
    assert "No change: every host has the same" not in text
    assert "Kernel, command line, IOMMU groups and drivers were not compared: old/overview.json: missing" in text
    assert "No change in verdicts or checks" in text
    assert "kernel, command line and IOMMU groups not compared" in text  # in the header line too
    compared = _text(render_index_page(run, diff_runs(record("old", run), record("new", run))))
    assert "No change: every host has the same" in compared and "not compared" not in compared


def test_hosts_sort_in_natural_order():
    names = ("kvm10", "kvm5", "KVM7", "kvm5b", "kvm1²")  # ² is a digit to str.isdigit(), not to int()
    run = RunResult("t", 1.0, [HostResult(n, "ssh", healthy_checks()) for n in names])
    assert list(rows_of(render_index_page(run))) == ["kvm1²", "kvm5", "kvm5b", "KVM7", "kvm10"]


def test_hosts_failing_one_check_for_different_reasons_share_that_cause():
    """No DMAR table on one host, no SMMU in another's IORT: both lack what firmware.iommu_table certifies, and the
    fleet page counts them as one cause, said with the check's description. A parenthesis inside a message is
    part of it; only a closing one (a host's own detail) is left out."""
    from vfio_certify.report.html import common_root_causes

    def failing(message):
        checks = with_outcomes(healthy_checks(), firmware_iommu_table=(F, message))
        return checks

    same = "no ACPI DMAR or IVRS table: the IOMMU (VT-d / AMD-Vi) is off or absent in the firmware"
    hosts = [HostResult("amd1", "ssh", failing(same), overview()),
             HostResult("amd2", "ssh", failing(same + " (BIOS 1.2)"), overview())]
    [cause] = common_root_causes(RunResult("t", 1.0, hosts))
    assert (cause.label, cause.varied, len(cause.hosts)) == (same, False, 2)
    hosts.append(HostResult("arm1", "ssh", failing("the ACPI IORT describes no SMMU (only the ITS for MSIs)"),
                            overview()))
    [cause] = common_root_causes(RunResult("t", 1.0, hosts))
    assert cause.check == "firmware.iommu_table" and cause.varied and [h for h, _ in cause.hosts] == ["amd1", "amd2", "arm1"]
    assert cause.label.startswith("the firmware describes an IOMMU")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", render_index_page(RunResult("t", 1.0, hosts))))
    assert "3 hosts fail firmware.iommu_table, each for its own reason; a pass means the firmware describes" in text


def test_fix_plan_length_and_the_most_common_root_cause_of_a_fleet_of_ten(tmp_path):
    """Twelve hosts lacking intel_iommu=on is what a team rolls out first: the page says so, and how long each
    host's plan is."""
    from vfio_certify.model import BootSetup, FixAction

    missing = "intel_iommu=on is missing and this kernel does not enable VT-d by default"
    add_flag = FixAction("kernel-args", add=("intel_iommu=on",))

    def lacking_flag(detail):
        checks = with_outcomes(healthy_checks(), kernel_cmdline=(F, f"{missing} ({detail})"),
                               iommu_enabled=(F, "IOMMU not enabled"), iommu_groups=(F, "no IOMMU groups"))
        for check in checks:
            check.fix = add_flag if check.id in ("kernel.cmdline", "iommu.enabled") else None
            check.caused_by = ["kernel.cmdline"] if check.id.startswith("iommu.") and check.outcome is F else []
        return checks

    hosts = [HostResult(f"kvm{n}", "ssh", lacking_flag("# CONFIG_INTEL_IOMMU_DEFAULT_ON is not set" if n % 2 else
                                                       "kernel 5.14 (VT-d off by default before 6.8; config not seen)"),
                        dataclasses.replace(overview(), boot=BootSetup("rhel"))) for n in range(1, 7)]
    no_table = with_outcomes(healthy_checks(), firmware_iommu_table=(F, "no ACPI DMAR or IVRS table"),
                             iommu_enabled=(F, "IOMMU not enabled"))
    no_table[5].fix, no_table[6].caused_by = FixAction("firmware", text="Enable VT-d."), ["firmware.iommu_table"]
    hosts += [HostResult("amd1", "ssh", no_table, overview())]
    hosts += [HostResult(f"good{n}", "ssh", healthy_checks(), overview()) for n in range(1, 4)]
    run = RunResult("2026-11-24T02:00:00Z", 12.0, hosts)
    page = write_index_page(run, None, tmp_path / "index.html")
    html = page.read_text()
    causes = re.search(r'<ol class="causes">(.*?)</ol>', html, re.S).group(1)
    assert re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", causes)).strip().startswith(
        f"6 hosts: {missing} kernel.cmdline — kvm1, kvm2")  # the detail in parentheses differs, the cause does not
    assert "amd1" not in causes  # one host's cause is not a fleet trend when others are shared
    plan_cells = dict(re.findall(r'<td class="host"><a href="[^"]*">([^<]+)</a>.*?<td class="plan[^"]*">(.*?)</td>', html, re.S))
    assert "3 steps" in plan_cells["kvm1"] and "1 reboot" in plan_cells["kvm1"]  # grubby, reboot, run again
    assert "2 steps" in plan_cells["amd1"] and "1 reboot" in plan_cells["amd1"]  # firmware setup, run again
    assert plan_cells["good1"].strip() == "—"
    dom, _ = chromium.render(page, tmp_path, window="1400,1100")
    assert "Fix plan length" in dom and "6 hosts:" in dom
