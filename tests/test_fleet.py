"""A fleet, nightly: many hosts over real SSH in one parallel run; the next night diffed against it.

The hosts are sshd instances on 127.0.0.x, each confined to a root built from a snapshot
fixture (tests/support/fleet). Hosts are named through the fleet's ssh_config (ssh://kvm-a),
so the two nights' summaries name the same hosts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.fleet import SILENT, FleetHost, LoopbackFleet
from support.summary_spec import assert_valid_summary

REPO = Path(__file__).resolve().parent.parent
HOSTS = REPO / "fixtures" / "hosts"

NIGHT_1 = {  # name: (fixture, expected verdict)
    "kvm-rocky": ("rocky9-after-intel-iommu", "certified"),
    "kvm-rocky-old": ("rocky9-before-intel-iommu", "not-certified"),
    "kvm-epyc": ("amd-epyc-default-on", "certified"),
    "kvm-laptop": ("amd-g505s-no-ivrs", "not-certified"),
    "kvm-cezanne": ("cezanne-nonviable-group", "certified"),
    "kvm-builtin": ("builtin-vfio", "certified"),
    "kvm-pve": ("proxmox-dmar-kernel-6.8", "certified"),
    "kvm-ryzen": ("ryzen-vfio-bound-gpu", "certified"),
}


@pytest.fixture(scope="module", autouse=True)
def needs_fleet():
    reason = LoopbackFleet.unavailable_reason()
    if reason:
        pytest.skip(reason)


def certify(fleet, names, output, *extra):
    args = [sys.executable, "-m", "vfio_certify.cli", "-j", "2", "--ssh-config", str(fleet.ssh_config),
            "--connect-timeout", "3", "--output", str(output), *map(str, extra)]
    for name in names:
        args += ["--host", f"ssh://{name}"]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)


def hosts_of(output):
    summary = json.loads((output / "summary.json").read_text())
    assert_valid_summary(summary)
    return {h["host"].removeprefix("ssh://"): h for h in summary["hosts"]}


def test_two_nights_of_a_fleet(tmp_path):
    night_1 = [FleetHost(name, HOSTS / fixture) for name, (fixture, _) in NIGHT_1.items()]
    night_1 += [FleetHost.slow("kvm-slow", HOSTS / "rocky9-after-intel-iommu", delay_s=3),
                FleetHost.down("kvm-dead"), FleetHost.down("kvm-hung", how=SILENT)]
    with LoopbackFleet(night_1) as fleet:
        proc = certify(fleet, fleet.names, tmp_path / "night-1")
        hosts = hosts_of(tmp_path / "night-1")
        for name in fleet.names:
            if name not in ("kvm-dead", "kvm-hung"):
                assert len(fleet.remote_commands(name)) == 1 and fleet.handshakes(name) == 1, name
    assert proc.returncode == 3  # some host unreachable; the others judged all the same
    for name, (_, verdict) in NIGHT_1.items():
        assert hosts[name]["verdict"] == verdict, (name, [c for c in hosts[name]["checks"] if c["outcome"] == "failed"])
    assert hosts["kvm-slow"]["verdict"] == "certified"  # slow, not stalled
    assert hosts["kvm-dead"]["verdict"] == hosts["kvm-hung"]["verdict"] == "unreachable"
    assert "Connection refused" in hosts["kvm-dead"]["checks"][0]["message"]
    assert len(hosts) == 11 and "REGRESSION" not in (tmp_path / "night-1" / "index.html").read_text()

    # Night 2: a kernel update dropped intel_iommu=on on kvm-rocky; kvm-ryzen is down; the laptop's
    # missing IVRS is waived (a firmware fix is on order); an old waiver for kvm-rocky-old expired.
    waivers = tmp_path / "waivers.toml"
    waivers.write_text(
        '[[waiver]]\ncheck = "*"\nhost = "ssh://kvm-laptop"\nreason = "firmware without IVRS; update ordered"\n'
        'owner = "hw-team@example.com"\nexpires = 2099-01-01\n\n'
        '[[waiver]]\ncheck = "iommu.*"\nhost = "ssh://kvm-rocky-old"\nreason = "until the reboot window"\n'
        'owner = "ops@example.com"\nexpires = 2020-06-30\n')
    night_2 = [FleetHost("kvm-rocky", HOSTS / "rocky9-before-intel-iommu"), FleetHost.down("kvm-ryzen")]
    night_2 += [FleetHost(n, HOSTS / NIGHT_1[n][0]) for n in ("kvm-rocky-old", "kvm-epyc", "kvm-laptop")]
    with LoopbackFleet(night_2) as fleet:
        proc = certify(fleet, fleet.names, tmp_path / "night-2", "--baseline", tmp_path / "night-1",
                       "--waivers", waivers)
    hosts = hosts_of(tmp_path / "night-2")
    assert proc.returncode == 3
    laptop = hosts["kvm-laptop"]
    assert laptop["verdict"] == "certified"
    waived = [c for c in laptop["checks"] if c["outcome"] == "waived"]
    assert waived and all(c["waiver"]["owner"] == "hw-team@example.com" for c in waived)
    old = {c["id"]: c for c in hosts["kvm-rocky-old"]["checks"]}
    assert old["iommu.enabled"]["outcome"] == "failed" and "waiver expired on 2020-06-30" in old["iommu.enabled"]["message"]

    diff = {h["host"].removeprefix("ssh://"): h for h in json.loads((tmp_path / "night-2" / "diff.json").read_text())["hosts"]}
    assert json.loads((tmp_path / "night-2" / "diff.json").read_text())["regression"]
    rocky = diff["kvm-rocky"]
    assert rocky["regression"] and rocky["new_verdict"] == "not-certified"
    assert any(line.startswith("newly failing: iommu.enabled") for line in rocky["changes"])
    assert "command line lost: intel_iommu=on" in rocky["changes"]
    assert any(line.startswith("IOMMU group: 0000:07:00.1 is no longer in any group") for line in rocky["changes"])
    assert diff["kvm-ryzen"]["regression"] and diff["kvm-ryzen"]["new_verdict"] == "unreachable"
    assert not diff["kvm-laptop"]["regression"]
    index = (tmp_path / "night-2" / "index.html").read_text()
    assert "REGRESSION" in index and "kvm-rocky" in index
    again = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "diff", tmp_path / "night-1", tmp_path / "night-2"],
                           capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 1 and "ssh://kvm-rocky: REGRESSION" in again.stdout
