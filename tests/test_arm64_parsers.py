"""arm64 facts on real captures: SMMUv3 and ITS probe lines, KVM at EL2, the IORT table, ITS interrupt chips.

The captures (fixtures/captures/arm64_*.txt) come from public reports, each headed by its source.
"""
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfio_certify.facts.cpuinfo import parse_cpuinfo
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.iort import parse_iort

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "fixtures" / "captures"
HOSTS = ROOT / "fixtures" / "hosts"


def capture(name: str) -> str:
    lines = (CAPTURES / name).read_text(encoding="utf-8").splitlines()
    while lines and lines[0].startswith(("# SOURCE", "# KIND")):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def test_ampere_altra_log_shows_its_smmuv3_and_groups():
    d = parse_dmesg(capture("arm64_ampere_altra_its_smmuv3_dmesg.txt"))
    assert d.smmu_probed[0] == ("[   14.704025] arm-smmu-v3 arm-smmu-v3.8.auto: ias 48-bit, oas 48-bit "
                                "(features 0x00001fff)")
    assert len(d.smmu_probed) == 4  # .8 to .11: one line per SMMU, not per queue
    assert d.gic_its[0] == ("[    0.000000] ITS [mem 0x5001000e0000-0x5001000fffff]")
    assert "pcieport 0003:00:05.0: Adding to iommu group 9" in d.group_additions[0]
    assert not d.acpi_dmar and not d.irq_remapping_enabled and not d.kvm_hyp_unavailable


def test_fvp_log_shows_iort_el2_and_vhe():
    d = parse_dmesg(capture("arm64_fvp_iort_smmuv3_its_vhe_dmesg.txt"))
    assert d.acpi_iort == ["[    0.000000] ACPI: IORT 0x00000000FB1CF018 0000DC (v00 ARMLTD ARMLIORT 00010000 ARMH 00010000)"]
    assert d.kvm_hyp_initialized == ["[    0.717899] kvm [1]: VHE mode initialized successfully"]
    assert d.cpu_boot_el == ["[    0.305312] CPU: All CPU(s) started at EL2"]
    assert d.smmu_probed and len(d.group_additions) == 9
    # the IDR0.HTTU override and the queue sizes are not the probe result line
    assert all("ias 48-bit" in line for line in d.smmu_probed)


@pytest.mark.parametrize("line", [
    "[    0.179311] kvm [1]: VHE mode initialized successfully",
    "[    1.278620] kvm [1]: Hyp mode initialized successfully",
    "[    0.612000] kvm [1]: Hyp nVHE mode initialized successfully",
    "[    0.612000] kvm [1]: Protected nVHE mode initialized successfully",
    "[    0.612000] kvm [1]: Protected hVHE mode initialized successfully",
])
def test_every_kvm_el2_success_wording_counts(line):
    assert parse_dmesg(line + "\n").kvm_hyp_initialized == [line]


def test_hyp_mode_not_available_is_read_from_the_kernel_message_only():
    quoted = re.search(r'"(kvm \[1\]: HYP mode not available)"', capture("arm64_kvm_hyp_mode_not_available.txt")).group(1)
    assert not parse_dmesg(capture("arm64_kvm_hyp_mode_not_available.txt")).kvm_hyp_unavailable  # prose quoting it
    d = parse_dmesg(f"[    5.777000] {quoted}\n")
    assert d.kvm_hyp_unavailable and not d.kvm_hyp_initialized


def test_device_tree_board_groups_are_platform_devices():
    d = parse_dmesg(capture("arm64_rk3588_devicetree_platform_groups_only.txt"))
    assert d.group_additions == ["[    6.086919] mpp_vdpu2 fdb50400.vdpu: Adding to iommu group 1"]
    assert not d.smmu_probed and not d.acpi_iort
    assert "iommu=on" in d.command_line.split()


def test_a_device_string_cannot_pose_as_an_smmu_or_its_line():
    d = parse_dmesg("[    3.1] usb 1-3: Product: arm-smmu-v3 x: ias 48-bit, oas 48-bit\n"
                    "[    3.2] usb 1-3: Manufacturer: kvm [1]: VHE mode initialized successfully\n")
    assert not d.smmu_probed and not d.kvm_hyp_initialized


def test_arm64_cpuinfo_has_no_vmx_or_svm():
    cpu = parse_cpuinfo((HOSTS / "ampere-altra-smmuv3/root/proc/cpuinfo").read_text())
    assert (cpu.arch, cpu.implementer, cpu.part, cpu.virtualization) == ("arm64", "0x41", "0xd0c", "")
    assert "asimd" in cpu.features and cpu.processors == 4 and cpu.name == "Arm Neoverse N1"
    kunpeng = parse_cpuinfo((HOSTS / "kunpeng920-smmu-off/root/proc/cpuinfo").read_text())
    assert kunpeng.name == "HiSilicon TaiShan v110 (Kunpeng 920)"
    assert parse_cpuinfo("CPU implementer\t: 0x4e\nCPU part\t: 0x004\n").name == "arm64 implementer 0x4e part 0x004"
    assert parse_cpuinfo((HOSTS / "missing-config/root/proc/cpuinfo").read_text()).arch == "x86"
    assert parse_cpuinfo("").arch == ""


def test_its_chips_are_msi_isolation_gicv2m_is_not():
    irqs = parse_interrupts((HOSTS / "ampere-altra-smmuv3/root/proc/interrupts").read_text())
    assert irqs.its_chips == {"ITS-MSI", "ITS-pMSI"} and irqs.msi_isolated_by_its
    assert not irqs.remapped_chips and irqs.its_evidence[0] == "51: ITS-pMSI Edge arm-smmu-v3-evtq"
    newer = parse_interrupts(" 45:  0  0  ITS-PCI-MSIX-0000:01:00.0   0 Edge      nvme0q0\n"
                             " 46:  0  0  GICv2m-PCI-MSI-0000:02:00.0 0 Edge eth0\n 47: 0 0 MSI 524288 Edge xhci\n")
    assert newer.its_chips == {"ITS-PCI-MSIX-0000:01:00.0"}
    assert newer.plain_chips == {"GICv2m-PCI-MSI-0000:02:00.0", "MSI"}
    # an interface named after a chip is an action, not a chip
    assert not parse_interrupts(" 50:  0  0  GICv3  27 Level  ITS-MSI\n").its_chips


def test_iort_tables_of_the_fixture_hosts():
    altra = parse_iort((HOSTS / "ampere-altra-smmuv3/root/sys/firmware/acpi/tables/IORT").read_bytes())
    assert altra.smmu_v3 == [0x100002000000, 0x10000A000000, 0x300002000000, 0x30000A000000]
    assert altra.its_groups == 1 and altra.root_complexes == {s: True for s in range(6)} and not altra.problem
    off = parse_iort((HOSTS / "kunpeng920-smmu-off/root/sys/firmware/acpi/tables/IORT").read_bytes())
    assert off.smmus == 0 and off.its_groups == 1 and off.root_complexes == {s: False for s in range(4)}
    assert "mapped straight to the ITS: 0000, 0001, 0002, 0003" in off.summary()


def test_iort_cut_or_foreign_is_said_not_raised():
    whole = (HOSTS / "ampere-altra-smmuv3/root/sys/firmware/acpi/tables/IORT").read_bytes()
    cut = parse_iort(whole[:150])
    assert cut.problem.startswith("cut short: 150 of") and len(cut.smmu_v3) <= 4
    assert parse_iort(b"DMAR" + whole[4:]).problem == "not an IORT table"
    assert parse_iort(b"").problem == "not an IORT table"
    bad_length = bytearray(whole)
    struct.pack_into("<H", bad_length, 49, 3)  # the first node claims 3 bytes
    assert "impossible length" in parse_iort(bytes(bad_length)).problem


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2000))
def test_iort_parser_never_raises(noise, length):
    header = b"IORT" + struct.pack("<I", length) + noise
    facts = parse_iort(header)
    assert isinstance(facts.summary(), str)
