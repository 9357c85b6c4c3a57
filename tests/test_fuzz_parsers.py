"""Parsers never raise, whatever the host sends (hypothesis). They return what they could read."""
import gzip
from pathlib import Path

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfio_certify.devices import DeviceSpecError, parse_device
from vfio_certify.facts import read_host_facts
from vfio_certify.facts.bootconfig import parse_default_grub, parse_grubby_info, parse_kernel_cmdline_file
from vfio_certify.facts.cmdline import parse_cmdline
from vfio_certify.facts.cpuinfo import parse_cpuinfo
from vfio_certify.facts import dmesg
from vfio_certify.facts.dmesg import parse_dmesg
from vfio_certify.facts.interrupts import parse_interrupts
from vfio_certify.facts.kconfig import parse_kernel_config
from vfio_certify.facts.kmodules import parse_modules_builtin, parse_modules_dep, parse_proc_modules
from vfio_certify.facts.libvirt import (domain_hostdevs, domain_name, parse_domcapabilities, parse_virsh_list,
                                       parse_virsh_version, qemu_held_pci)
from vfio_certify.facts.osrelease import parse_os_release
from vfio_certify.facts.readiness import (framebuffers_in_bars, parse_binding_file, parse_console_log, parse_cpulist,
                                          parse_iomem, parse_lspci_verbose)
from vfio_certify.facts.pci import parse_lspci_nnk
from vfio_certify.facts.pci_topology import parse_device_paths
from vfio_certify.facts.usb import parse_lsusb
from vfio_certify.snapshot import Snapshot
from vfio_certify.snapshot.reader import decode

TEXT_PARSERS = [
    parse_cmdline, parse_cpuinfo, parse_dmesg, parse_interrupts, parse_kernel_config, parse_proc_modules,
    parse_modules_builtin, parse_modules_dep, parse_os_release, parse_lspci_nnk, parse_lsusb,
    parse_default_grub, parse_grubby_info, parse_kernel_cmdline_file,
    parse_lspci_verbose, parse_iomem, lambda t: framebuffers_in_bars(parse_iomem(t)), parse_console_log, parse_cpulist,
    domain_hostdevs, domain_name, parse_domcapabilities, parse_virsh_list, parse_virsh_version, qemu_held_pci,
    lambda t: parse_binding_file("/etc/modprobe.d/x.conf", t), lambda t: parse_binding_file("/etc/driverctl.d/pci-x", t),
    lambda t: parse_binding_file("/etc/dracut.conf.d/x.conf", t), lambda t: parse_binding_file("/etc/modules", t),
    parse_device_paths,
]
# Text shaped like what the parsers look for, so the fuzzer reaches their inner branches.
HOSTILE_WORDS = st.sampled_from([
    "CONFIG_VFIO=", "# CONFIG_X is not set", "[    0.1] ", "DMAR: IOMMU enabled", "Kernel command line: ",
    "Bus 004 Device 002: ID ", "07:00.1 ", "\tKernel driver in use: ", "flags\t: vmx", "IR-PCI-MSI",
    'GRUB_CMDLINE_LINUX="', "$GRUB", "args=\"", "intel_iommu=", "FLReset+", "\tDevCap:\t", "  0000:01:00.0", " : BOOTFB",
    "vgaarb: setting as boot VGA device", "options vfio-pci ids=", "softdep ", "<hostdev type='pci'><source><address bus='",
    "vfio-pci,host=", "-> ../../../devices/pci0000:00/", "/0000:00:1c.0", "\"", "=", ":", "\n", "\r\n", "\x00", "\ufffd", " ",
])
shaped_text = st.lists(st.one_of(HOSTILE_WORDS, st.text(max_size=12)), max_size=40).map("".join)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(shaped_text, st.binary(max_size=400).map(decode)))
def test_text_parsers_never_raise(data):
    for parser in TEXT_PARSERS:
        parser(data)


@settings(max_examples=300)
@given(text=st.text(max_size=30))
def test_device_specs_parse_or_refuse_in_one_line(text):
    try:
        spec = parse_device(text)
    except DeviceSpecError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("--device")
    else:
        assert spec.kind in ("pci", "usb") and spec.key


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.dictionaries(
    st.sampled_from(["root/proc/cmdline", "root/proc/cpuinfo", "root/proc/modules", "root/proc/interrupts",
                     "root/etc/os-release", "root/etc/default/grub", "root/proc/config.gz", "commands/dmesg",
                     "commands/dmesg.rc", "commands/lspci_-nnk", "commands/lsusb", "commands/uname_-r",
                     "root/sys/bus/pci/devices/0000:07:00.1/vendor", "root/sys/bus/pci/devices/0000:07:00.1/class",
                     "root/sys/bus/usb/devices/4-1/busnum", "meta.json", "commands/lspci_-vvv", "root/proc/iomem",
                     "root/sys/bus/pci/devices/0000:07:00.1/reset_method", "root/sys/bus/pci/devices/0000:07:00.1/numa_node",
                     "commands/virsh_list_--all", "commands/virsh_dumpxml_vm1", "commands/virsh_domcapabilities",
                     "root/etc/libvirt/qemu/vm1.xml", "root/etc/modprobe.d/vfio.conf", "commands/ps_-eo_pid,args"]),
    st.binary(max_size=300), max_size=10))
def test_whole_snapshot_of_garbage_is_read_without_raising(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("snap")
    for rel, data in blobs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("config.gz") and data[:1] == b"g":
            data = gzip.compress(data)[: max(1, len(data) // 2)]  # a cut gzip stream
        path.write_bytes(data)
    try:
        snap = Snapshot(root)
    except Exception as exc:  # only the documented refusal is allowed: a bad meta.json
        assert type(exc).__name__ == "SnapshotError" and "meta.json" in str(exc)
        return
    read_host_facts(snap)


# dmesg's first filter (facts/dmesg.py may_match) passes over a line only if no pattern can match it: checked with
# lines generated from each pattern itself, so that a pattern added without its words in _STARTS/_HOLDS fails here.
DMESG_PATTERNS = {**dmesg._PATTERNS, "command_line": dmesg._COMMAND_LINE}


@pytest.mark.parametrize("kind", sorted(DMESG_PATTERNS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_no_line_a_dmesg_pattern_matches_is_passed_over(kind, data):
    pattern = DMESG_PATTERNS[kind]
    line = data.draw(st.from_regex(pattern).filter(lambda text: "\n" not in text and "\r" not in text))
    body = dmesg.strip_prefix(line)
    if pattern.search(body):  # what parse_dmesg searches: the message, past any timestamp or syslog prefix
        assert dmesg.may_match(body), (kind, body)


def test_the_filter_changes_nothing_read_from_real_boot_logs(monkeypatch):
    """Every captured dmesg (fixture hosts, captures, the shared real outputs) reads the same with and without it."""
    repo = Path(__file__).resolve().parent.parent
    logs = [*repo.glob("fixtures/hosts/*/commands/dmesg"), *repo.glob("fixtures/captures/*.txt"),
            *(repo.parent / "shared").glob("realdata/*.txt"), *(repo.parent / "shared").glob("seed/*.txt")]
    assert len(logs) > 20
    filtered = {log: parse_dmesg(decode(log.read_bytes())) for log in logs}
    monkeypatch.setattr(dmesg, "may_match", lambda body: True)
    matched = 0
    for log in logs:
        whole = parse_dmesg(decode(log.read_bytes()))
        assert filtered[log] == whole, log
        matched += sum(map(len, whole.matches.values()))
    assert matched > 100
