"""The certification page a person acts on: root causes with their consequences folded under them,
the fix plan at the top of the host, and the picture of the IOMMU groups, on the fixture hosts and on
a host with a hundred groups; looked at in headless Chromium, on screen and printed to PDF."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import chromium

from vfio_certify.model import BootSetup, DeviceView, GroupView, HostOverview, HostResult, RunResult
from vfio_certify.report import groups_picture
from vfio_certify.report.html import write_certification_page

REPO = Path(__file__).resolve().parent.parent


def _certify(tmp_path, host, *devices):
    out = tmp_path / host
    subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--snapshot", f"fixtures/hosts/{host}",
                    *[f"--device={d}" for d in devices], "--output", str(out)],
                   capture_output=True, text=True, cwd=REPO, timeout=300)
    return out / "certification.html"


def _text(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pages")
    return {
        "before": _certify(tmp, "rocky9-before-intel-iommu", "0000:07:00.1"),
        "cezanne": _certify(tmp, "cezanne-nonviable-group", "0000:04:00.0"),
        "after": _certify(tmp, "rocky9-after-intel-iommu", "0000:07:00.1"),
    }


def test_root_cause_first_and_its_consequences_folded_under_it(pages):
    html = pages["before"].read_text()
    box = re.search(r'<div class="verdict v-not-certified".*?</div>', html, re.S).group(0)
    assert "from 1 root cause" in _text(box)
    roots = re.findall(r'<li class="root">(.*?)</li>\s*</ul>\s*</li>', box, re.S)
    assert len(roots) == 1 and roots[0].lstrip().startswith("<code>kernel.cmdline</code>")
    assert "3 checks follow from it" in _text(roots[0])
    for consequence in ("iommu.enabled", "iommu.groups", "iommu.group_isolated[0000:07:00.1]"):
        assert f"<code>{consequence}</code>" in roots[0]
    assert "follows from <code>kernel.cmdline</code>" in html  # and on each consequence's own card


def test_fix_plan_at_the_top_of_the_host(pages):
    html = pages["before"].read_text()
    assert html.index('class="fixplan"') < html.index("<h3>Host facts</h3>")
    plan = re.search(r'<section class="fixplan".*?</section>', html, re.S).group(0)
    assert "3 steps, 1 reboot" in plan
    assert '<pre class="commands">grubby --update-kernel=ALL --args=&#34;intel_iommu=on&#34;</pre>' in plan
    assert [_text(s).strip() for s in re.findall(r'<p class="step-text">(.*?)</p>', plan, re.S)] == [
        "Add intel_iommu=on to the command line of every installed kernel",
        "Reboot into the new kernel command line ⟳ reboot",
        "Run vfio-certify again, with the same options, to confirm"]
    assert 'class="fixplan"' not in pages["after"].read_text()  # certified: nothing to do


def test_picture_marks_the_named_device_and_the_members_that_block_its_group(pages):
    html = pages["cezanne"].read_text()
    svg = "".join(re.findall(r'<svg class="groups-svg".*?</svg>', html, re.S))
    group5 = re.search(r'<g class="grp not-viable has-named">.*?</g>\s*</g>\s*(?=<g class="grp|</g>)', svg, re.S).group(0)
    assert ">group 5<" in group5 and "✘ NOT VIABLE: 4 members block" in group5
    named = re.findall(r'<g class="fn named">.*?</g>', group5, re.S)
    assert len(named) == 1 and ">04:00.0<" in named[0] and "◀ amdgpu" in named[0]
    blockers = re.findall(r'<g class="fn blocker">.*?</g>', group5, re.S)
    assert sorted(re.search(r">(04:00\.\d)<", b).group(1) for b in blockers) == ["04:00.1", "04:00.2", "04:00.3", "04:00.4"]
    assert "✘ snd_hda_intel" in group5
    assert "Not drawn: groups 0–4, 7, holding only host bridges" in _text(html)
    # the table below: the named device's group first, its blockers said in words
    table = html[html.index('<table class="groups">'):]
    assert re.search(r'<span class="grp-num">(\d+)</span>', table).group(1) == "5"
    assert table.count("✘ blocks the group") == 4
    assert "<script" not in html.lower()


def _hundred_groups(tree: bool) -> list[GroupView]:
    """A two-socket-like host: root ports with NICs, a GPU with its audio (not viable), and dozens of integrated
    single functions and host bridges."""
    def dev(address, cls, code, driver, parent="", **kw):
        return DeviceView(address, code, cls, "8086:0000", "", driver, cls == "PCI bridge", kw.get("named", False),
                          kw.get("blocks", False), parent if tree else "")
    groups = [GroupView(0, [dev("0000:00:00.0", "Host bridge", "0x060000", "", "pci0000:00")], None)]
    for port in range(1, 9):
        root = f"0000:00:{port:02x}.0"
        groups.append(GroupView(len(groups), [dev(root, "PCI bridge", "0x060400", "pcieport", "pci0000:00")], None))
        groups.append(GroupView(len(groups), [dev(f"0000:{port * 16:02x}:00.0", "Ethernet controller", "0x020000",
                                                  "i40e", root)], None))
    groups.append(GroupView(len(groups), [
        dev("0000:00:1c.0", "PCI bridge", "0x060400", "pcieport", "pci0000:00"),
        dev("0000:90:00.0", "VGA compatible controller", "0x030000", "nvidia", "0000:00:1c.0", named=True),
        dev("0000:90:00.1", "Audio device", "0x040300", "snd_hda_intel", "0000:00:1c.0", blocks=True)], False))
    while len(groups) < 100:
        n = len(groups)
        cls, code = ("Host bridge", "0x060000") if n % 3 == 0 else ("System peripheral", "0x088000")
        groups.append(GroupView(n, [dev(f"0000:ff:{n % 32:02x}.{n // 32}", cls, code, "", "pci0000:ff")], None))
    return groups


@pytest.mark.parametrize("tree", [True, False])
def test_a_hundred_groups_stay_readable(tree):
    pic = groups_picture.picture(_hundred_groups(tree))
    boxes = [b for s in pic.strips for lane in s.lanes for b in lane.boxes]
    assert pic.drawn == len(boxes) and len(pic.bridges_only) == 100 - len(boxes)
    assert all(len(b.rows) > 0 for b in boxes) and pic.bridges_only[:3] == [0, 1, 3]  # host bridges, root ports
    first = pic.strips[0].lanes[0]
    assert any(b.named for b in first.boxes)  # the named device's lane comes first
    if tree:
        assert first.title.startswith("root port 00:1c.0")
        assert [r.indent for r in first.boxes[0].rows] == [0, 1, 1]  # the GPU and its audio under their root port
        assert {lane.title for s in pic.strips for lane in s.lanes} >= {f"root port 00:{p:02x}.0" for p in range(1, 9)}
    compact = [b for b in boxes if b.compact]
    assert len(compact) > 40 and all(b.height < 30 for b in compact)  # single unjudged functions: one line each
    assert all(s.height <= groups_picture.STRIP_HEIGHT + 200 for s in pic.strips)  # print breaks between strips
    for strip in pic.strips:  # nothing drawn over anything else, nothing outside the picture
        placed = [b for lane in strip.lanes for b in lane.boxes]
        for i, a in enumerate(placed):
            assert 0 <= a.x and a.x + groups_picture.BOX_WIDTH <= pic.width and a.y + a.height <= strip.height
            for b in placed[i + 1:]:
                apart = (a.x + groups_picture.BOX_WIDTH <= b.x or b.x + groups_picture.BOX_WIDTH <= a.x
                         or a.y + a.height <= b.y or b.y + b.height <= a.y)
                assert apart, (a.number, b.number)


def _hundred_group_page(tmp_path) -> Path:
    host = HostResult("big", "snapshot", overview=HostOverview(hostname="big", groups=_hundred_groups(True),
                                                                boot=BootSetup("rhel"), pci_tree_collected=True))
    return write_certification_page(RunResult("2026-11-24T10:00:00Z", 1.0, [host]), tmp_path / "big.html")


def test_chromium_shows_and_prints_the_plan_and_the_picture(pages, tmp_path):
    dom, png = chromium.render(pages["before"], tmp_path, window="1400,2000")
    assert "Fix plan" in dom and "grubby --update-kernel=ALL" in dom
    dom, _ = chromium.render(pages["cezanne"], tmp_path, window="1400,2000")
    assert dom.count('class="groups-svg"') == 1 and "NOT VIABLE: 4 members block" in dom
    if not shutil.which("pdftotext"):
        pytest.skip("needs pdftotext (poppler-utils, in scripts/apt-packages.txt)")
    for page, must in ((pages["cezanne"], ["NOT VIABLE: 4 members block", "◀ amdgpu", "✘ snd_hda_intel", "Fix plan"]),
                       (_hundred_group_page(tmp_path), ["root port 00:1c.0", "◀ nvidia", "group 98"])):
        pdf = tmp_path / f"{page.stem}.pdf"
        chromium.print_to_pdf(page, pdf, tmp_path)
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        for words in must:  # the SVG's text is real text in the printed page, not a picture of it
            assert words in text, (page.name, words)
