"""Verdicts on snapshot fixtures of good and bad hosts (fixtures/hosts, see its README)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.summary_spec import assert_valid_summary

REPO = Path(__file__).resolve().parent.parent
HOSTS = REPO / "fixtures" / "hosts"

# host: (verdict with no device named, required checks that must fail)
EXPECTED = {
    "rocky9-before-intel-iommu": ("not-certified", {"iommu.enabled", "iommu.groups"}),
    "rocky9-after-intel-iommu": ("certified", set()),
    "amd-epyc-default-on": ("certified", set()),
    "amd-g505s-no-ivrs": ("not-certified", {"firmware.iommu_table", "iommu.enabled", "iommu.groups", "iommu.irq_remapping"}),
    "cezanne-nonviable-group": ("certified", set()),
    "ryzen-vfio-bound-gpu": ("certified", set()),
    "builtin-vfio": ("certified", set()),
    "missing-config": ("incomplete", set()),  # no kernel config on the host: nothing shows how it was built
    "proxmox-dmar-kernel-6.8": ("certified", set()),
    # its config is cut mid-line: the options after the cut were not collected, so not judged (incomplete)
    "hostile-input": ("incomplete", set()),
    "ampere-altra-smmuv3": ("certified", set()),
    "kunpeng920-smmu-off": ("not-certified", {"firmware.iommu_table", "iommu.enabled", "iommu.groups"}),
    "rk3588-devicetree-no-pcie-iommu": ("not-certified", {"firmware.iommu_table", "iommu.enabled"}),
}


def judge(tmp_path, *args):
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", *map(str, args), "--output", tmp_path],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert_valid_summary(summary)
    return proc, {Path(h["host"]).name: h for h in summary["hosts"]}


def outcomes(host):
    return {c["id"]: c for c in host["checks"]}


@pytest.fixture(scope="module")
def all_hosts(tmp_path_factory):
    args = [arg for name in EXPECTED for arg in ("--snapshot", HOSTS / name)]
    return judge(tmp_path_factory.mktemp("all"), *args)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_and_blocking_checks(all_hosts, name):
    _, hosts = all_hosts
    verdict, must_fail = EXPECTED[name]
    host = hosts[name]
    blocking = {c["id"] for c in host["checks"] if c["severity"] == "required" and c["outcome"] in ("failed", "error")}
    assert host["verdict"] == verdict, sorted(blocking)
    assert must_fail <= blocking, sorted(blocking)
    if verdict == "certified":
        assert not blocking


def test_one_run_judges_every_host_in_command_line_order(all_hosts):
    proc, hosts = all_hosts
    assert list(hosts) == list(EXPECTED) and proc.returncode == 1


def test_rocky9_before_says_add_intel_iommu_on_with_grubby(all_hosts):
    checks = outcomes(all_hosts[1]["rocky9-before-intel-iommu"])
    assert "intel_iommu=on" in checks["iommu.enabled"]["message"]
    assert 'grubby --update-kernel=ALL --args="intel_iommu=on"' in checks["kernel.cmdline"]["remediation"]
    assert checks["iommu.irq_remapping"]["outcome"] == "passed"  # the seed: remapping on even before


def test_rocky9_after_certifies_the_i350_port_and_the_usb_disk(tmp_path):
    proc, hosts = judge(tmp_path, "--snapshot", HOSTS / "rocky9-after-intel-iommu", "--device", "07:00.1",
                        "--device", "004.002")
    checks = outcomes(hosts["rocky9-after-intel-iommu"])
    assert proc.returncode == 0 and hosts["rocky9-after-intel-iommu"]["verdict"] == "certified"
    assert checks["iommu.group_isolated[0000:07:00.1]"]["outcome"] == "passed"
    assert "group 48" in checks["iommu.group_isolated[0000:07:00.1]"]["message"]
    assert checks["device.present[004.002]"]["outcome"] == "passed" and "152d:9561" in checks["device.present[004.002]"]["message"]


def test_cezanne_gpu_alone_is_not_viable_but_the_whole_group_is(tmp_path):
    _, hosts = judge(tmp_path / "one", "--snapshot", HOSTS / "cezanne-nonviable-group", "--device", "04:00.0")
    check = outcomes(hosts["cezanne-nonviable-group"])["iommu.group_isolated[0000:04:00.0]"]
    assert check["outcome"] == "failed" and hosts["cezanne-nonviable-group"]["verdict"] == "not-certified"
    for other in ("0000:04:00.1", "0000:04:00.2", "0000:04:00.3"):
        assert other in check["message"]
    page = (tmp_path / "one" / "certification.html").read_text()
    assert "NOT VIABLE" in page
    whole = [arg for fn in range(5) for arg in ("--device", f"04:00.{fn}")]
    _, hosts = judge(tmp_path / "all", "--snapshot", HOSTS / "cezanne-nonviable-group", *whole)
    assert outcomes(hosts["cezanne-nonviable-group"])["iommu.group_isolated[0000:04:00.0]"]["outcome"] == "passed"


def test_ryzen_gpu_and_its_audio_on_vfio_pci_are_viable(tmp_path):
    _, hosts = judge(tmp_path, "--snapshot", HOSTS / "ryzen-vfio-bound-gpu", "--device", "2d:00.0", "--device", "2d:00.1")
    checks = outcomes(hosts["ryzen-vfio-bound-gpu"])
    assert checks["iommu.group_isolated[0000:2d:00.0]"]["outcome"] == "passed"
    assert "vfio-pci" in checks["device.present[0000:2d:00.0]"]["message"]


def test_amd_default_on_needs_no_amd_iommu_parameter(all_hosts):
    checks = outcomes(all_hosts[1]["amd-epyc-default-on"])
    assert checks["kernel.cmdline"]["outcome"] == "passed"
    assert checks["kernel.config[CONFIG_INTEL_IOMMU]"]["outcome"] == "skipped"  # an AMD-Vi host


def test_builtin_vfio_counts_as_available(all_hosts):
    checks = outcomes(all_hosts[1]["builtin-vfio"])
    assert all("built into the kernel" in checks[f"vfio.module[{m}]"]["message"] for m in ("vfio", "vfio_pci", "vfio_iommu_type1"))


def test_proxmox_6_8_is_on_without_a_flag_and_fixes_use_proxmox_boot_tool(all_hosts):
    from vfio_certify.facts import read_host_facts
    from vfio_certify.rules.remedy import kernel_args
    from vfio_certify.snapshot import Snapshot

    checks = outcomes(all_hosts[1]["proxmox-dmar-kernel-6.8"])
    assert checks["iommu.enabled"]["outcome"] == "passed" and checks["kernel.cmdline"]["outcome"] == "passed"
    facts = read_host_facts(Snapshot(HOSTS / "proxmox-dmar-kernel-6.8"))
    assert facts.is_proxmox and "proxmox-boot-tool refresh" in kernel_args(facts, add=["intel_iommu=on"])


def test_missing_config_is_skipped_with_the_reason_never_failed(all_hosts):
    """No config on the host is evidence missing, not a check that does not apply: the host is incomplete."""
    host = all_hosts[1]["missing-config"]
    checks = outcomes(host)
    not_this_host = {"kernel.config[CONFIG_AMD_IOMMU]", "kernel.config[CONFIG_ARM_SMMU_V3]", "kernel.config[CONFIG_ARM_GIC_V3_ITS]"}
    config = [c for i, c in checks.items() if i.startswith("kernel.config[") and i not in not_this_host]
    assert config and all(c["outcome"] == "skipped" and c["skip_reason"] == "not-collected"
                          and "neither exists on the host" in c["message"] and "modprobe configs" in c["message"]
                          for c in config)
    assert all(checks[i]["skip_reason"] == "not-applicable" for i in not_this_host)  # an Intel VT-d host
    assert all(checks[i]["message"] == "not applicable: arm64 only, and this host is x86"
               for i in not_this_host - {"kernel.config[CONFIG_AMD_IOMMU]"})
    assert host["verdict"] == "incomplete"


def test_a_bundle_made_before_the_readiness_sources_is_incomplete_and_says_what_to_collect(tmp_path):
    """missing-config stands for a bundle made before `lspci -vvv`, reset_method and virsh were collected."""
    proc, hosts = judge(tmp_path, "--snapshot", HOSTS / "missing-config", "--device", "0000:03:00.0")
    checks = outcomes(hosts["missing-config"])
    for check_id in ("device.reset[0000:03:00.0]", "device.in_use[0000:03:00.0]", "libvirt.hostdev"):
        assert checks[check_id]["outcome"] == "skipped" and checks[check_id]["skip_reason"] == "not-collected", check_id
    assert any("lspci -vvv" in line for line in checks["device.reset[0000:03:00.0]"]["evidence"])
    assert "virsh list --all" in proc.stdout and "/sys/bus/pci/devices/0000:03:00.0/reset_method" in proc.stdout
    assert hosts["missing-config"]["verdict"] == "incomplete"


def test_the_certified_examples_are_judged_on_their_readiness_sources(tmp_path):
    hosts = {}
    for name, *devices in (("ryzen-vfio-bound-gpu", "0000:2d:00.0", "0000:2d:00.1"), ("rocky9-after-intel-iommu", "07:00.1"),
                           ("proxmox-dmar-kernel-6.8", "0000:00:02.0")):
        (tmp_path / name).mkdir()
        hosts.update(judge(tmp_path / name, "--snapshot", HOSTS / name, *[f"--device={d}" for d in devices])[1])
    ryzen = outcomes(hosts["ryzen-vfio-bound-gpu"])
    assert hosts["ryzen-vfio-bound-gpu"]["verdict"] == "certified"
    assert ryzen["device.reset[0000:2d:00.0]"]["outcome"] == "warning" and "Polaris" in ryzen["device.reset[0000:2d:00.0]"]["message"]
    assert ryzen["device.host_console[0000:2d:00.0]"]["outcome"] == "passed"  # the GT 710 is the boot VGA device
    assert ryzen["device.vfio_binding[0000:2d:00.0]"]["outcome"] == "passed"  # vfio-pci.ids on the command line
    rocky = outcomes(hosts["rocky9-after-intel-iommu"])  # kernel 5.14: no reset_method, lspci -vvv's FLReset+ says
    assert rocky["device.reset[0000:07:00.1]"]["outcome"] == "passed" and "flr" in rocky["device.reset[0000:07:00.1]"]["message"]
    assert rocky["device.in_use[0000:07:00.1]"]["outcome"] == "passed" and rocky["libvirt.hostdev"]["outcome"] == "passed"
    proxmox = outcomes(hosts["proxmox-dmar-kernel-6.8"])  # the mini-PC's only GPU carries the host console
    assert proxmox["device.host_console[0000:00:02.0]"]["outcome"] == "failed"
    assert proxmox["libvirt.hostdev"]["skip_reason"] == "not-applicable"  # Proxmox VE runs QEMU without libvirt
    assert hosts["proxmox-dmar-kernel-6.8"]["verdict"] == "not-certified"
