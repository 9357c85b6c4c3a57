"""Device readiness (device.reset, host_console, vfio_binding, sriov, in_use, numa; libvirt.hostdev) judged on
real captures (fixtures/captures, each citing its public source) put into hand-built HostFacts."""
import dataclasses
import shutil
from pathlib import Path

from test_parsers import capture

from support.hosts import intel_host, pci
from vfio_certify.devices import parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.bootconfig import parse_default_grub
from vfio_certify.facts.libvirt import (HeldDevice, OpenVfioFiles, domain_hostdevs, parse_domcapabilities,
                                        parse_open_vfio_files, qemu_held_pci)
from vfio_certify.facts.model import LibvirtFacts, ModuleFacts, PciReadiness, ReadinessFacts
from vfio_certify.facts.osrelease import OsRelease
from vfio_certify.facts.readiness import (framebuffers_in_bars, parse_binding_file, parse_console_log, parse_iomem,
                                          parse_lspci_verbose)
from vfio_certify.model import Outcome
from vfio_certify.rules import device_readiness as rd
from vfio_certify.rules import libvirt
from vfio_certify.snapshot import Snapshot

DEBIAN = OsRelease("debian", (), "Debian GNU/Linux 12")


def _section(text: str, start: str, end: str = "") -> str:
    body = text.split(start, 1)[1]
    return body.split(end, 1)[0] if end else body


def gpu_host(address="0000:01:00.0", vendor_device="10de:2206", ready=None, release="6.1.0-13-amd64", **readiness):
    """A Debian host with one GPU; its readiness facts as given (a collection that read them)."""
    host = intel_host(release=release, os=DEBIAN, cmdline="BOOT_IMAGE=/vmlinuz ro intel_iommu=on")
    devices = dict(host.pci)
    devices[address] = pci(address, vendor_device, "030000", "amdgpu" if vendor_device.startswith("1002") else "nouveau", 20)
    devices[address[:-1] + "1"] = pci(address[:-1] + "1", vendor_device.split(":")[0] + ":aaf0", "040300", "snd_hda_intel", 20)
    info = ReadinessFacts(devices={a: PciReadiness() for a in devices}, lspci={}, iomem={}, framebuffers={},
                          bindings=[])
    info.devices[address] = ready or PciReadiness()
    for key, value in readiness.items():
        setattr(info, key, value)
    return dataclasses.replace(host, pci=devices, readiness=info)


# -- device.reset ------------------------------------------------------------------------------------

def test_reset_before_5_15_flreset_plus_from_lspci_passes():
    lspci = parse_lspci_verbose(capture("lspci_vvv_flreset_plus_nvidia_a100_cloud_hypervisor.txt"))
    assert lspci["0000:00:04.0"].flreset is True and lspci["0000:00:04.0"].nosoftrst is True
    facts = gpu_host("0000:00:04.0", "10de:20b0", PciReadiness(reset_file=True), release="5.4.0-42-generic",
                     lspci=lspci)
    r = rd.reset(facts, parse_device("00:04.0"))
    assert r.outcome is Outcome.PASSED and r.message == "reset by flr"
    assert any("FLReset+" in e for e in r.evidence)


def test_reset_before_5_15_flreset_minus_and_no_reset_file_fails_with_a_fix():
    lspci = parse_lspci_verbose(capture("lspci_vvv_flreset_minus_libvfio_user.txt"))
    assert lspci["0000:00:03.0"].flreset is False
    facts = gpu_host("0000:00:03.0", "4e58:0001", PciReadiness(reset_file=False), release="5.4.0-42-generic", lspci=lspci)
    r = rd.reset(facts, parse_device("00:03.0"))
    assert r.outcome is Outcome.FAILED and "no reset method" in r.message
    assert "FLReset+" in r.remediation and any("FLReset-" in e for e in r.evidence)


def test_reset_method_empty_on_5_15_is_none_and_flr_passes():
    absent = gpu_host(ready=PciReadiness(reset_method=None, reset_file=False))
    assert rd.reset(absent, parse_device("01:00.0")).outcome is Outcome.FAILED
    flr = gpu_host(ready=PciReadiness(reset_method=["flr", "bus"], reset_file=True))
    r = rd.reset(flr, parse_device("01:00.0"))
    assert r.outcome is Outcome.PASSED and r.message == "reset by flr (then bus)"


def test_an_empty_reset_method_is_every_method_switched_off_and_the_fix_turns_them_back_on():
    """The kernel shows reset_method only for a function it found a method for; `echo > reset_method` empties it."""
    off = gpu_host(ready=PciReadiness(reset_method=[], reset_file=True))
    r = rd.reset(off, parse_device("01:00.0"))
    assert r.outcome is Outcome.FAILED and "reset methods are switched off" in r.message
    assert "/sys/bus/pci/devices/0000:01:00.0/reset_method: (empty)" in r.evidence
    assert r.remediation.startswith("echo default > /sys/bus/pci/devices/0000:01:00.0/reset_method")


def test_bus_reset_only_names_every_function_behind_the_bridge():
    facts = gpu_host(ready=PciReadiness(reset_method=["bus"], reset_file=True))
    r = rd.reset(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.WARNING and "0000:01:00.1" in r.message


def test_amd_navi10_with_bus_reset_is_the_reset_bug_and_says_vendor_reset():
    # vendor-reset #46: the AMD GPU "is stuck on `bus`"; 731f is Navi 10 by its device id, not by its name
    facts = gpu_host(vendor_device="1002:731f", ready=PciReadiness(reset_method=["bus"], reset_file=True))
    r = rd.reset(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.WARNING and "Navi 10" in r.message
    assert "vendor-reset" in r.remediation and "device_specific > /sys/bus/pci/devices/0000:01:00.0/reset_method" in r.remediation
    assert any("1002:731f" in e for e in r.evidence)
    fixed = dataclasses.replace(facts, modules=ModuleFacts({"vendor_reset": "Live"}, set(), {}, None))
    fixed.readiness.devices["0000:01:00.0"] = PciReadiness(reset_method=["device_specific", "bus"], reset_file=True)
    assert rd.reset(fixed, parse_device("01:00.0")).outcome is Outcome.PASSED


def test_a_name_alone_is_no_reset_bug():
    facts = gpu_host(vendor_device="1002:73bf", ready=PciReadiness(reset_method=["flr"], reset_file=True))  # RX 6800
    assert rd.reset(facts, parse_device("01:00.0")).outcome is Outcome.PASSED


def test_reset_on_a_snapshot_without_the_readiness_sources_is_skipped_never_passed():
    facts = dataclasses.replace(gpu_host(), readiness=None)
    r = rd.reset(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.SKIPPED and "reset_method" in r.message and "not collected" in r.message
    old_kernel = gpu_host(ready=PciReadiness(reset_file=True), release="5.4.0-42-generic")  # no lspci line for it
    assert rd.reset(old_kernel, parse_device("01:00.0")).outcome is Outcome.SKIPPED


# -- device.host_console -----------------------------------------------------------------------------

def test_simpledrm_in_the_boot_gpus_bar_fails_with_the_sysfb_fix():
    text = capture("proc_iomem_bootfb_simpledrm_talos.txt")
    held = framebuffers_in_bars(parse_iomem(_section(text, "/proc/iomem:\n", "dmesg:")))
    assert list(held) == ["0000:c3:00.0"] and len(held["0000:c3:00.0"]) == 2
    facts = gpu_host("0000:c3:00.0", "1002:1586", PciReadiness(boot_vga=True), release="6.18.48-talos", iomem=held)
    r = rd.host_console(facts, parse_device("c3:00.0"))
    assert r.outcome is Outcome.FAILED and "BOOTFB" in r.message and "simpledrm" in r.message
    assert "initcall_blacklist=sysfb_init" in r.remediation and "update-grub" in r.remediation


def test_efifb_bar_from_dmesg_when_iomem_was_not_read_fails():
    log = parse_console_log(capture("dmesg_efifb_bar_assigned_single_gpu.txt"))
    assert log.efifb_bar == "0000:01:00.0"
    facts = gpu_host(ready=PciReadiness(boot_vga=True), release="5.4.0-42-generic", iomem=None, console_log=log)
    r = rd.host_console(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.FAILED and "video=efifb:off" in r.remediation


def test_boot_vga_override_names_the_last_device():
    log = parse_console_log(capture("dmesg_vgaarb_boot_vga_override_system76.txt"))
    assert log.boot_vga == "0000:01:00.0"
    boot = gpu_host(ready=PciReadiness(boot_vga=True), console_log=log)
    assert rd.host_console(boot, parse_device("01:00.0")).outcome is Outcome.WARNING
    second = gpu_host("0000:02:00.0", ready=PciReadiness(boot_vga=False), console_log=log)
    assert rd.host_console(second, parse_device("02:00.0")).outcome is Outcome.PASSED


def test_host_console_is_not_applicable_to_a_nic_and_skipped_when_not_collected():
    facts = gpu_host()
    r = rd.host_console(facts, parse_device("07:00.1"))
    assert r.outcome is Outcome.SKIPPED and r.message.startswith("not applicable")
    r = rd.host_console(dataclasses.replace(facts, readiness=None), parse_device("01:00.0"))
    assert r.outcome is Outcome.SKIPPED and "not collected" in r.message


# -- device.vfio_binding -----------------------------------------------------------------------------

def test_modprobe_ids_without_softdep_or_initramfs_warns():
    bindings = parse_binding_file("/etc/modprobe.d/vfio.conf", "options vfio-pci ids=10de:2206,10de:1aef\n")
    facts = gpu_host(bindings=bindings)
    r = rd.vfio_binding(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.WARNING and "softdep nouveau pre: vfio-pci" in r.remediation
    bindings += parse_binding_file("/etc/modprobe.d/vfio.conf", "softdep nouveau pre: vfio-pci\n")
    assert rd.vfio_binding(gpu_host(bindings=bindings), parse_device("01:00.0")).outcome is Outcome.PASSED


def test_cmdline_ids_missing_from_the_next_boot_warn():
    facts = gpu_host()
    facts = dataclasses.replace(facts, cmdline=facts.cmdline + parse_default_grub(
        'GRUB_CMDLINE_LINUX_DEFAULT="vfio-pci.ids=10de:2206"\n').args,
        boot_configs=[parse_default_grub('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')])
    r = rd.vfio_binding(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.WARNING and "next boot" in r.message


def test_no_binding_is_fine_with_managed_yes_and_stale_virqfd_is_named_harmless():
    facts = gpu_host(bindings=parse_binding_file("/etc/modules", "vfio\nvfio_iommu_type1\nvfio_pci\nvfio_virqfd\n"),
                     release="6.8.12-4-pve")
    r = rd.vfio_binding(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.PASSED and "managed='yes'" in r.message
    assert any("vfio_virqfd" in e and "harmless" in e for e in r.evidence)


def test_driverctl_override_binds_by_address():
    facts = gpu_host(bindings=parse_binding_file("/etc/driverctl.d/pci-0000:01:00.0", "vfio-pci\n"))
    r = rd.vfio_binding(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.PASSED and "pci-0000:01:00.0" in r.message


# -- device.sriov ------------------------------------------------------------------------------------

def test_vf_in_its_pfs_group_warns_and_a_pf_says_how_to_persist_vfs():
    facts = intel_host()
    pf = dataclasses.replace(facts.pci["0000:07:00.0"], sriov_totalvfs=7, sriov_numvfs=1)
    vf = dataclasses.replace(pci("0000:07:10.0", "8086:1520", "020000", "igbvf", 47), physfn="0000:07:00.0")
    facts = dataclasses.replace(facts, pci={**facts.pci, pf.address: pf, vf.address: vf})
    r = rd.sriov(facts, parse_device("07:10.0"))
    assert r.outcome is Outcome.WARNING and "shares IOMMU group 47" in r.message
    r = rd.sriov(facts, parse_device("07:00.0"))
    assert r.outcome is Outcome.PASSED and "sriov_numvfs" in r.remediation and "0000:07:10.0 (group 47)" in r.evidence
    assert rd.sriov(facts, parse_device("07:00.1")).outcome is Outcome.SKIPPED


# -- device.in_use -----------------------------------------------------------------------------------

DOMAIN_XML = """<domain type='kvm'><name>win11</name><devices>
<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/></source></hostdev>
<hostdev mode='subsystem' type='usb' managed='yes'><source><vendor id='0x152d'/><product id='0x9561'/></source></hostdev>
</devices></domain>"""


NO_GROUP_NODES = OpenVfioFiles(groups=[], files=[])  # /dev/vfio read: only the container, no group node


def test_a_device_in_another_domains_xml_or_a_qemu_command_line_is_in_use():
    held = [HeldDevice(k, "win11", "persistent XML, shut off") for k in domain_hostdevs(DOMAIN_XML)]
    assert [h.key for h in held] == ["0000:01:00.0", "usb 152d:9561"]
    lv = LibvirtFacts(virsh=True, domains={"win11": "shut off"}, held=held, processes={}, vfio_open=NO_GROUP_NODES)
    facts = dataclasses.replace(gpu_host(), libvirt=lv)
    r = rd.in_use(facts, parse_device("01:00.0"))
    assert r.outcome is Outcome.FAILED and "win11" in r.message and "detach" in r.remediation.lower()
    assert rd.in_use(facts, parse_device("07:00.1")).outcome is Outcome.PASSED
    ps = qemu_held_pci("4242 /usr/bin/qemu-system-x86_64 -device vfio-pci,host=07:00.1,id=hostdev0\n")
    facts = dataclasses.replace(facts, libvirt=dataclasses.replace(lv, processes=ps))
    assert "QEMU process 4242" in rd.in_use(facts, parse_device("07:00.1")).message


def test_in_use_is_skipped_on_what_was_not_collected():
    assert rd.in_use(gpu_host(), parse_device("01:00.0")).outcome is Outcome.SKIPPED  # no virsh output at all
    lv = LibvirtFacts(virsh=True, domains={"vm1": "running"}, xml_missing=["vm1"], processes={})
    r = rd.in_use(dataclasses.replace(gpu_host(), libvirt=lv), parse_device("01:00.0"))
    assert r.outcome is Outcome.SKIPPED and "vm1" in r.message
    assert domain_hostdevs("<!DOCTYPE x [<!ENTITY a 'b'>]><domain/>") == []  # no entity expansion from a bundle


def test_in_use_without_libvirtd_is_judged_on_the_definitions_and_processes_when_they_were_read():
    down = LibvirtFacts(virsh=True, list_error="failed to connect to the hypervisor", processes={},
                        vfio_open=NO_GROUP_NODES)
    r = rd.in_use(dataclasses.replace(gpu_host(), libvirt=down), parse_device("01:00.0"))
    assert r.outcome is Outcome.SKIPPED and r.message.endswith("was not collected") and "/etc/libvirt/qemu" in r.message
    held = [HeldDevice(k, "win11", "/etc/libvirt/qemu/win11.xml") for k in domain_hostdevs(DOMAIN_XML)]
    read = dataclasses.replace(down, persistent_xml=["/etc/libvirt/qemu/win11.xml"], held=held)
    assert rd.in_use(dataclasses.replace(gpu_host(), libvirt=read), parse_device("01:00.0")).outcome is Outcome.FAILED
    r = rd.in_use(dataclasses.replace(gpu_host(), libvirt=read), parse_device("07:00.1"))
    assert r.outcome is Outcome.PASSED and any("/etc/libvirt/qemu (1 definition(s))" in e for e in r.evidence)


# -- device.numa -------------------------------------------------------------------------------------

def test_numa_names_the_local_cpus_and_warns_on_a_narrow_link():
    ready = PciReadiness(numa_node=1, local_cpulist="16-31", link={
        "current_link_speed": "16.0 GT/s PCIe", "max_link_speed": "16.0 GT/s PCIe",
        "current_link_width": "4", "max_link_width": "16"})
    r = rd.numa(gpu_host(ready=ready), parse_device("01:00.0"))
    assert r.outcome is Outcome.WARNING and "node 1" in r.message and "16 CPUs" in r.message and "width 4 of 16" in r.message
    ready.link["current_link_width"] = "16"
    assert rd.numa(gpu_host(ready=ready), parse_device("01:00.0")).outcome is Outcome.PASSED
    assert rd.numa(dataclasses.replace(gpu_host(), readiness=None), parse_device("01:00.0")).outcome is Outcome.SKIPPED


# -- libvirt.hostdev ---------------------------------------------------------------------------------

def test_domcapabilities_with_vfio_passes_and_without_fails():
    caps = parse_domcapabilities(capture("virsh_domcapabilities_hostdev_libvirt_testdata.txt"))
    assert caps.hostdev_supported and caps.pci_backends == ["default", "vfio"] and "usb" in caps.subsys_types
    lv = LibvirtFacts(virsh=True, domains={}, domcaps=caps, versions=["Running hypervisor: QEMU 10.0.0"])
    facts = dataclasses.replace(gpu_host(), libvirt=lv)
    r = libvirt.hostdev(facts)
    assert r.outcome is Outcome.PASSED and "Running hypervisor: QEMU 10.0.0" in r.evidence
    no_vfio = dataclasses.replace(caps, pci_backends=["default", "kvm"])
    r = libvirt.hostdev(dataclasses.replace(facts, libvirt=dataclasses.replace(lv, domcaps=no_vfio)))
    assert r.outcome is Outcome.FAILED and "apt-get install qemu-system-x86" in r.remediation


def test_libvirt_hostdev_is_not_applicable_without_libvirtd_and_skipped_when_not_collected():
    facts = gpu_host()
    assert libvirt.hostdev(facts).outcome is Outcome.SKIPPED
    no_daemon = dataclasses.replace(facts, libvirt=LibvirtFacts(virsh=True, list_error="failed to connect to the hypervisor"))
    r = libvirt.hostdev(no_daemon)
    assert r.outcome is Outcome.SKIPPED and "not applicable" in r.message and "failed to connect" in r.message
    uncollected = dataclasses.replace(facts, libvirt=LibvirtFacts(virsh=True, domains={}))  # domcapabilities not run
    r = libvirt.hostdev(uncollected)
    assert r.outcome is Outcome.SKIPPED and r.skip_reason.value == "not-collected" and "virsh domcapabilities" in r.message


# -- the e2e preflight uses them ---------------------------------------------------------------------

def test_preflight_refuses_a_gpu_the_host_console_holds_or_a_domain_holds_and_names_the_reset():
    from vfio_certify.e2e.preflight import preflight
    held = framebuffers_in_bars(parse_iomem(_section(capture("proc_iomem_bootfb_simpledrm_talos.txt"), "/proc/iomem:\n",
                                                     "dmesg:")))
    facts = gpu_host("0000:c3:00.0", "1002:1586", PciReadiness(boot_vga=True, reset_method=["bus"], reset_file=True),
                     iomem=held)
    spec = parse_device("c3:00.0")
    refused = preflight(facts, spec, [spec], {})
    assert not refused.ok and any(r.startswith("device.host_console[0000:c3:00.0]") for r in refused.refusals)
    assert "initcall_blacklist=sysfb_init" in "\n".join(refused.remediation)
    assert any("the reset it relies on" in e and "bus reset" in e for e in refused.evidence)
    free = gpu_host("0000:c3:00.0", "1002:1586", PciReadiness(boot_vga=False, reset_method=["flr"], reset_file=True))
    free = dataclasses.replace(free, libvirt=LibvirtFacts(virsh=True, domains={"win11": "shut off"}, processes={},
                                                          held=[HeldDevice("0000:c3:00.0", "win11", "persistent XML")]))
    refused = preflight(free, spec, [spec], {})
    assert [r for r in refused.refusals if r.startswith("device.in_use")] and \
        not [r for r in refused.refusals if r.startswith("device.host_console")]
    assert any("reset by flr" in e for e in refused.evidence)


# -- partial snapshots of the fixture host: what is cut is skipped, never passed -----------------------

STRIX = Path(__file__).resolve().parent.parent / "fixtures" / "hosts" / "strix-halo-simpledrm-boot-gpu"
GPU, NIC = parse_device("c3:00.0"), parse_device("c1:00.0")


def _judged(tmp_path, *cut):
    """The fixture host with the named snapshot paths removed, read and judged."""
    copy = tmp_path / "host"
    shutil.copytree(STRIX, copy, symlinks=True)
    for rel in cut:
        target = copy / rel
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    facts = read_host_facts(Snapshot(copy))
    return {r.id: r for r in (rd.reset(facts, GPU), rd.reset(facts, NIC), rd.host_console(facts, GPU),
                              rd.in_use(facts, GPU), rd.in_use(facts, NIC), rd.numa(facts, NIC),
                              rd.vfio_binding(facts, NIC), libvirt.hostdev(facts))}


def test_the_whole_fixture_host_is_judged(tmp_path):
    r = _judged(tmp_path)
    assert r["device.host_console[0000:c3:00.0]"].outcome is Outcome.FAILED
    assert r["device.in_use[0000:c3:00.0]"].outcome is Outcome.FAILED
    assert r["device.reset[0000:c3:00.0]"].outcome is Outcome.WARNING
    assert all(r[i].outcome is Outcome.PASSED for i in ("device.reset[0000:c1:00.0]", "device.in_use[0000:c1:00.0]",
                                                        "device.numa[0000:c1:00.0]", "libvirt.hostdev"))


def test_without_lspci_verbose_no_readiness_check_passes(tmp_path):
    r = _judged(tmp_path, "commands/lspci_-vvv")
    for check in ("device.reset[0000:c1:00.0]", "device.numa[0000:c1:00.0]", "device.host_console[0000:c3:00.0]",
                  "device.vfio_binding[0000:c1:00.0]"):
        assert r[check].outcome is Outcome.SKIPPED and "not collected" in r[check].message, check


def test_a_cut_iomem_or_libvirt_output_is_skipped_not_passed(tmp_path):
    r = _judged(tmp_path, "root/proc/iomem", "root/sys/class/graphics")
    assert r["device.host_console[0000:c3:00.0]"].outcome is Outcome.SKIPPED  # boot_vga=1, iomem unknown
    r = _judged(tmp_path / "2", "commands/virsh_dumpxml_win11", "root/etc/libvirt/qemu/win11.xml")
    assert r["device.in_use[0000:c1:00.0]"].outcome is Outcome.SKIPPED and "win11" in r["device.in_use[0000:c1:00.0]"].message
    r = _judged(tmp_path / "3", "commands/ps_-eo_pid,args")
    assert r["device.in_use[0000:c1:00.0]"].outcome is Outcome.SKIPPED
    assert r["device.in_use[0000:c3:00.0]"].outcome is Outcome.FAILED  # what was collected still proves it held
    r = _judged(tmp_path / "4", "commands/virsh_list_--all")
    assert r["libvirt.hostdev"].outcome is Outcome.SKIPPED and r["device.in_use[0000:c1:00.0]"].outcome is Outcome.SKIPPED
    r = _judged(tmp_path / "5", "root/sys/bus/pci/devices/0000:c1:00.0/reset_method",
                "root/sys/bus/pci/devices/0000:c1:00.0/reset")
    assert r["device.reset[0000:c1:00.0]"].outcome is Outcome.FAILED  # collected and absent on 6.17: no reset method
