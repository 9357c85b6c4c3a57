"""The certification page (vfio_certify.report.html), rendered from a hand-built RunResult."""
from __future__ import annotations

import re

import pytest

from support import chromium

from vfio_certify.model import (
    CheckResult,
    DeviceView,
    GroupView,
    HostOverview,
    HostResult,
    Outcome,
    RunResult,
    Severity,
)
from vfio_certify.report.html import render_certification_page, write_certification_page

XSS = "<script>alert(1)</script>"


def _dev(address, class_name, vendor_device, name="", driver="", *, bridge=False, named=False):
    class_code = "0x060400" if bridge else "0x020000"
    return DeviceView(address, class_code, class_name, vendor_device, name, driver, bridge, named)


def _run() -> RunResult:
    certified = HostResult(
        host="kvm1.example.com",
        source="ssh",
        checks=[
            CheckResult("iommu.enabled", Outcome.PASSED, Severity.REQUIRED, "IOMMU enabled (5 units)",
                        evidence=["/sys/class/iommu: dmar0 dmar1"]),
            CheckResult("kvm.module", Outcome.PASSED, Severity.REQUIRED, "kvm_intel loaded"),
            CheckResult("iommu.interrupt-remapping", Outcome.WAIVED, Severity.REQUIRED,
                        "interrupt remapping not reported",
                        waiver={"reason": "lab box, isolated VLAN", "owner": "jdoe", "expires": "2027-01-31"}),
        ],
        overview=HostOverview(
            hostname="kvm1", kernel_release="6.8.0-45-generic", distro="Ubuntu 24.04.1 LTS",
            cpu_model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", cpu_vendor="GenuineIntel",
            iommu_vendor="intel", cmdline="BOOT_IMAGE=/vmlinuz intel_iommu=on iommu=pt",
            collected_at="2026-11-24T10:00:01Z",
            groups=[GroupView(3, [_dev("0000:3b:00.0", "Ethernet controller", "8086:1521",
                                       "I350 Gigabit Network Connection", "vfio-pci", named=True)], True)],
        ),
    )
    failing = HostResult(
        host="kvm2.example.com",
        source="snapshot",
        checks=[
            CheckResult("kernel.cmdline", Outcome.PASSED, Severity.RECOMMENDED, "no pcie_acs_override"),
            CheckResult(
                "iommu.enabled", Outcome.FAILED, Severity.REQUIRED, "the IOMMU is not enabled",
                evidence=["/sys/class/iommu: empty", f"dmesg: DMAR: {XSS}"],
                remediation=("sudo sed -i 's/^GRUB_CMDLINE_LINUX=\"/&intel_iommu=on /' /etc/default/grub\n"
                             "sudo update-grub\n"
                             "sudo reboot"),
            ),
            CheckResult("iommu.passthrough-mode", Outcome.WARNING, Severity.RECOMMENDED,
                        "iommu=pt not set: host DMA is translated"),
            CheckResult("cpu.nested", Outcome.SKIPPED, Severity.INFO, "not a nested VM"),
        ],
        overview=HostOverview(
            hostname=f"kvm2{XSS}", kernel_release="5.14.0-427.el9.x86_64", distro="Rocky Linux 9.4",
            cpu_model="AMD EPYC 7313 16-Core Processor", cpu_vendor="AuthenticAMD", iommu_vendor="amd",
            cmdline='ro quiet console="ttyS0,115200" a=1&b=2', collected_at="2026-11-24T09:58:00Z",
            groups=[
                GroupView(0, [_dev("0000:00:01.0", "PCI bridge", "1022:1483", "Starship/Matisse GPP Bridge",
                                   "pcieport", bridge=True)], None),
                GroupView(14, [
                    _dev("0000:00:03.1", "PCI bridge", "1022:1483", "", "pcieport", bridge=True),
                    _dev("0000:41:00.0", "VGA compatible controller", "10de:1eb8", "TU104GL [Tesla T4]",
                         "nvidia", named=True),
                    _dev("0000:41:00.1", "Audio device", "10de:10f8", "TU104 HD Audio Controller",
                         "snd_hda_intel"),
                ], False),
                GroupView(15, [_dev("0000:42:00.0", "Non-Volatile memory controller", "144d:a808")], None),
            ],
        ),
    )
    unreachable = HostResult(host="kvm3.example.com", source="ssh",
                             unreachable_reason="ssh: connect to host kvm3.example.com port 22: No route to host")
    return RunResult(started_at="2026-11-24T10:00:00Z", duration_s=3.417,
                     hosts=[certified, failing, unreachable])


@pytest.fixture(scope="module")
def page() -> str:
    return render_certification_page(_run())


def _text(html: str) -> str:
    """Visible text, roughly: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_verdict_of_each_host(page):
    text = _text(page)
    assert "✔ CERTIFIED for device assignment" in text
    assert "NOT CERTIFIED for device assignment" in text
    assert "UNREACHABLE" in text
    assert "No route to host" in text
    assert "1 certified · 1 not certified · 0 incomplete · 1 unreachable" in text
    for n in (1, 2, 3):  # table of contents with one anchor per host
        assert f'href="#host-{n}"' in page and f'id="host-{n}"' in page


def test_checks_with_labels_evidence_remediation_and_waiver(page):
    text = _text(page)
    assert "✘ FAIL" in text and "▲ WARN" in text and "– SKIP" in text and "✔ PASS" in text
    assert "◇ WAIVED" in text and "lab box, isolated VLAN" in text and "2027-01-31" in text
    assert "blocks certification" in text
    # the remediation keeps its lines, in a <pre>
    assert re.search(r'<pre class="remediation">[^<]*update-grub\nsudo reboot</pre>', page)
    # failures first within an area: iommu.enabled (failed) before iommu.passthrough-mode (warning)
    second_host = page.split('id="host-2"', 1)[1]
    assert second_host.index("iommu.enabled") < second_host.index("iommu.passthrough-mode")


def test_group_table(page):
    for address in ("0000:3b:00.0", "0000:00:01.0", "0000:00:03.1", "0000:41:00.0", "0000:41:00.1",
                    "0000:42:00.0"):
        assert f">{address}<" in page
    named_rows = re.findall(r'<tr class="dev named">(.*?)</tr>', page, re.S)
    assert any("0000:41:00.0" in row and "◀ assigned" in row for row in named_rows)
    assert page.count('<td class="note">◀ assigned') == 2  # the T4 and the I350, nothing else
    assert "NOT VIABLE" in re.search(r'<tbody class="group not-viable.*?</tbody>', page, re.S).group(0)
    assert page.count("✘ NOT VIABLE</span>") == 1 and page.count("✔ viable</span>") == 1
    bridge_rows = re.findall(r'<tr class="dev bridge">(.*?)</tr>', page, re.S)
    assert len(bridge_rows) == 2
    nvme = re.search(r'<td class="mono">0000:42:00.0</td>.*?</tr>', page, re.S).group(0)
    assert '<td class="nodriver"><span class="none">—</span></td>' in nvme  # no driver bound


def test_host_text_is_escaped_and_there_is_no_script(page):
    assert "<script" not in page.lower()
    assert "kvm2&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "DMAR: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a=1&amp;b=2" in page and "console=&#34;ttyS0,115200&#34;" in page


def test_no_groups_and_unreachable_host():
    run = RunResult(started_at="t", hosts=[
        HostResult(host="bare", source="local", checks=[
            CheckResult("iommu.enabled", Outcome.FAILED, Severity.REQUIRED, "the IOMMU is not enabled")]),
        HostResult(host="gone", source="ssh", unreachable_reason="timed out"),
    ])
    page = render_certification_page(run)
    bare, gone = page.split('id="host-2"', 1)
    assert "no IOMMU groups: the IOMMU is not enabled" in bare
    assert "no IOMMU groups" not in gone  # nothing collected, nothing claimed
    assert "timed out" in gone and "not collected" in gone


def test_single_host_has_no_table_of_contents():
    run = RunResult(started_at="t", hosts=[HostResult(host="solo", source="local")])
    page = render_certification_page(run)
    assert 'class="toc"' not in page
    assert "CERTIFIED for device assignment" in page and "No check was run" in page


def test_chromium_renders_the_page(tmp_path):
    page = write_certification_page(_run(), tmp_path / "out" / "certification.html")
    dom, _ = chromium.render(page, tmp_path)
    assert "NOT CERTIFIED for device assignment" in dom
    assert 'class="groups"' in dom and "0000:41:00.0" in dom and "NOT VIABLE" in dom
    assert "<script" not in dom.lower()


def test_chromium_keeps_a_hostile_test_id_inert_in_report_html(tmp_path):
    """pytest-html's app.js inserts each row's cells with innerHTML; the test id carries the snapshot path
    (or host name) as the user or customer wrote it, so it must reach the page escaped."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    evil = "<img src=x onerror=document.body.dataset.pwned=1>"
    snap = tmp_path / "evil" / evil
    shutil.copytree(repo / "fixtures" / "hosts" / "rocky9-after-intel-iommu", snap, symlinks=True)
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot", str(snap), "--output",
                           str(tmp_path / "out"), "--", "-k", "reachable or enabled"],
                          capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-2000:]
    dom, _ = chromium.render(tmp_path / "out" / "report.html", tmp_path)
    assert "data-pwned" not in dom and '<img src="x"' not in dom  # the payload neither ran nor became an element
    cells = re.findall(r'<td class="col-testId">(.*?)</td>', dom)
    assert cells and all("&lt;img src=x onerror=document.body.dataset.pwned=1&gt;" in c for c in cells), cells[:3]
