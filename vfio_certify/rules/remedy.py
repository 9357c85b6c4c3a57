"""Remediations written for the host's distro family: the commands, not a wiki link.

Each returns a Remedy: the text a person reads, which also carries what it changes as data
(a FixAction) so that a host's fix plan (report/fixplan.py) merges them: one visit to the
firmware setup, one command for every kernel argument.
"""
from __future__ import annotations

import re

from ..facts import HostFacts
from ..facts.kernel_cmdline import intel_iommu_default_on, intremap_disabled_by, iommu_off_by, iommu_switch
from ..model import BootSetup, FixAction


class Remedy(str):
    """A remediation text that knows what it changes (`action`). It is a str everywhere else: rules pass it
    on as any text, and catalog.result() keeps its action beside the text."""

    action: FixAction

    def __new__(cls, text: str, action: FixAction) -> "Remedy":
        remedy = super().__new__(cls, text)
        remedy.action = action
        return remedy


def boot_setup(facts: HostFacts) -> BootSetup:
    family = "proxmox" if facts.is_proxmox else facts.distro_family
    return BootSetup(family, _grub_file(facts), _rhel_grub2_mkconfig(facts) if family == "rhel" else "")


def _what(add, remove) -> str:
    add_text, remove_text = " ".join(add), " ".join(remove)
    return " and ".join(x for x in (f"add {add_text}" if add else "", f"remove {remove_text}" if remove else "") if x)


def kernel_args(facts: HostFacts, add: list[str] = (), remove: list[str] = ()) -> str:
    """How to change the kernel command line persistently on this host, then reboot."""
    text = _kernel_args_text(boot_setup(facts), list(add), list(remove))
    return Remedy(text, FixAction("kernel-args", add=tuple(add), remove=tuple(remove)))


def kernel_args_change(boot: BootSetup, add: list[str], remove: list[str]) -> tuple[str, list[str]]:
    """The fix plan's one change of the command line: (what to do, the command(s)), without the reboot."""
    what = _what(add, remove)
    if boot.family == "rhel":
        args = (f' --args="{" ".join(add)}"' if add else "") + (f' --remove-args="{" ".join(remove)}"' if remove else "")
        where = "the command line of every installed kernel"
        what = (f"Add {' '.join(add)} to {where}" if not remove else f"Remove {' '.join(remove)} from {where}"
                if not add else f"On {where}: {what}")
        return what, [f"grubby --update-kernel=ALL{args}"]
    where, command = {
        "proxmox": ("in /etc/kernel/cmdline (systemd-boot) or GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub (GRUB)",
                    "proxmox-boot-tool refresh"),
        "debian": (f"in GRUB_CMDLINE_LINUX_DEFAULT in {boot.grub_file}", "update-grub"),
        "suse": ("in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub", "grub2-mkconfig -o /boot/grub2/grub.cfg"),
    }.get(boot.family, ("on the kernel command line in the boot loader's configuration", ""))
    return f"{what.capitalize()} {where}, then:", [command] if command else []


def _kernel_args_text(boot: BootSetup, add: list[str], remove: list[str]) -> str:
    add_text, remove_text = " ".join(add), " ".join(remove)
    what = _what(add, remove)
    if boot.family == "proxmox":
        return (
            f"{what.capitalize()} in /etc/kernel/cmdline (systemd-boot) or GRUB_CMDLINE_LINUX_DEFAULT in "
            "/etc/default/grub (GRUB), then:\nproxmox-boot-tool refresh\nreboot"
        )
    family = boot.family
    if family == "rhel":
        lines = []
        if add:
            lines.append(f'grubby --update-kernel=ALL --args="{add_text}"')
        if remove:
            lines.append(f'grubby --update-kernel=ALL --remove-args="{remove_text}"')
        lines.append("reboot")
        lines.append(f"# or: {what} in GRUB_CMDLINE_LINUX in /etc/default/grub, then {boot.grub_mkconfig}")
        return "\n".join(lines)
    if family == "debian":
        return f"{what.capitalize()} in GRUB_CMDLINE_LINUX_DEFAULT in {boot.grub_file}, then:\nupdate-grub\nreboot"
    if family == "suse":
        return (
            f"{what.capitalize()} in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then:\n"
            "grub2-mkconfig -o /boot/grub2/grub.cfg\nreboot"
        )
    return f"{what.capitalize()} on the kernel command line in the boot loader's configuration, then reboot."


def iommu_cmdline_fix(facts: HostFacts) -> str:
    """Set the command line right for this host's IOMMU vendor ('' when it needs no change)."""
    params = facts.kernel_params.value or []  # the running command line (dmesg's copy for a damaged /proc/cmdline)
    remove = (iommu_switch(params, "intel_iommu")[1] + iommu_switch(params, "amd_iommu")[1] + iommu_off_by(params)
              + intremap_disabled_by(params))
    kept = [p for p in params if p.raw not in remove]
    add = []
    if facts.iommu_vendor not in ("amd", "arm") and not iommu_switch(kept, "intel_iommu")[0] \
            and not intel_iommu_default_on(facts)[0]:
        add.append("intel_iommu=on")
    return kernel_args(facts, add=add, remove=remove) if (add or remove) else ""


def _grub_file(facts: HostFacts) -> str:
    """Where GRUB_CMDLINE_LINUX_DEFAULT is set last: a drop-in in /etc/default/grub.d overrides /etc/default/grub."""
    grub = next((b for b in facts.boot_configs if b.source == "/etc/default/grub"), None)
    where = grub.assigned_in.get("GRUB_CMDLINE_LINUX_DEFAULT", "/etc/default/grub") if grub else "/etc/default/grub"
    return where if where == "/etc/default/grub" else f"{where} (it overrides /etc/default/grub)"


def _rhel_grub2_mkconfig(facts: HostFacts) -> str:
    """Regenerating GRUB on this RHEL-family release. RHEL 9 and Fedora 34+ keep one /boot/grub2/grub.cfg for BIOS
    and UEFI (the EFI grub.cfg is a stub that must not be overwritten); since RHEL 9.3 (Fedora 39) GRUB_CMDLINE_LINUX
    reaches the BLS entries only with --update-bls-cmdline (RHEL 9.3 release notes)."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", facts.os.version_id)[:2])
    version = numbers + (99,) if len(numbers) == 1 else numbers or (99_999,)  # "9" (CentOS Stream) is the latest 9
    unified, bls = {"fedora": ((34,), (39,)), "amzn": ((2022,), None)}.get(facts.os.id, ((9,), (9, 3)))
    if version < unified:
        efi = {"rhel": "redhat", "ol": "redhat"}.get(facts.os.id, facts.os.id)
        return f"grub2-mkconfig -o /boot/grub2/grub.cfg (BIOS) or -o /boot/efi/EFI/{efi}/grub.cfg (UEFI)"
    flag = " --update-bls-cmdline" if bls and version >= bls else ""
    return f"grub2-mkconfig -o /boot/grub2/grub.cfg{flag} (BIOS and UEFI alike: the grub.cfg in /boot/efi is a stub, keep it)"


def kernel_build(*options: str, note: str = "") -> str:
    """Boot a kernel built with `options` (CONFIG_ names), each =y or =m; the plan asks for one kernel with all."""
    wanted = " and ".join(f"{option}=y or =m" for option in options)
    return Remedy(f"Boot a kernel built with {wanted}{f' ({note})' if note else ''}.",
                  FixAction("kernel-config", options=tuple(options)))


def firmware_iommu(facts: HostFacts) -> str:
    if facts.iommu_vendor != "arm" and facts.cpu and facts.cpu.is_virtual_machine:
        # The VM's firmware setup has no IOMMU option (and no IVRS/DMAR of its own): the hypervisor gives one.
        text = (
            "This host is a virtual machine: its IOMMU is the hypervisor's to give. Give it a virtual IOMMU "
            "(libvirt: <iommu model='intel'><driver intremap='on' caching_mode='on'/></iommu> with "
            "<features><ioapic driver='qemu'/></features>; QEMU: -device intel-iommu,intremap=on,caching-mode=on "
            "with -machine q35,kernel-irqchip=split), then power the VM off and on. A cloud instance has one only "
            "where its provider offers it."
        )
        return Remedy(text, FixAction("firmware", text=text))
    if facts.iommu_vendor == "arm":
        text = (
            "Enable the SMMU in the firmware setup (UEFI or BMC: 'SMMU', 'SMMUv3 support' or 'IOMMU', usually in the "
            "PCIe or I/O configuration), then power-cycle the host. The kernel finds an SMMU only through the "
            "firmware's IORT SMMU nodes (or a device-tree smmu node), never from its command line: if the setup "
            "has no such option, update the firmware."
        )
    elif facts.iommu_vendor == "amd":
        text = (
            "Enable the IOMMU in the firmware setup (AMD CBS / NBIO Common Options: IOMMU = Enabled; "
            "also SVM Mode). A firmware that publishes no IVRS table cannot enable AMD-Vi: update the firmware."
        )
    else:
        text = (
            "Enable Intel VT-d ('Intel Virtualization Technology for Directed I/O') in the firmware setup, "
            "then power-cycle the host."
        )
    return Remedy(text, FixAction("firmware", text=text))


def firmware_virtualization(facts: HostFacts) -> str:
    """VT-x/AMD-V: the firmware's to enable, or for a VM its hypervisor's (merged with firmware_iommu's into one step)."""
    if facts.cpu and facts.cpu.is_virtual_machine:
        text = ("This host is a virtual machine whose hypervisor does not pass hardware virtualization through: "
                "enable nested virtualization on the outer host (modprobe kvm_intel nested=1 or kvm_amd nested=1) "
                "and give this VM the host CPU model (libvirt: <cpu mode='host-passthrough'/>).")
    else:
        text = ("Enable 'Intel Virtualization Technology' (VT-x) or 'SVM Mode' (AMD-V) in the firmware setup, "
                "then power-cycle the host.")
    return Remedy(text, FixAction("firmware", text=text))


def load_module(facts: HostFacts, module: str) -> str:
    return Remedy("\n".join(load_module_commands(module)), FixAction("module", module=module))


def load_module_commands(module: str) -> list[str]:
    dashed = module.replace("_", "-")
    return [f"modprobe {dashed}", "# load it at every boot:", f"echo {dashed} > /etc/modules-load.d/{dashed}.conf"]


def reinstall_modules(facts: HostFacts) -> str:
    release = facts.kernel_release or "$(uname -r)"
    family = facts.distro_family
    if family == "rhel":
        return f"dnf reinstall kernel-modules-core-{release} kernel-core-{release}"
    if family == "debian":
        return f"apt-get install --reinstall linux-image-{release}   # Ubuntu: also linux-modules-{release}"
    return f"Reinstall the module package of kernel {release}."


def vendor_reset(facts: HostFacts, address: str) -> str:
    """AMD Polaris/Vega/Navi10 GPUs: gnif/vendor-reset's device-specific reset, chosen through reset_method on 5.15+."""
    headers = {"rhel": "dnf install kernel-devel dkms", "debian": "apt-get install dkms linux-headers-$(uname -r)"}.get(
        facts.distro_family, "Install dkms and the running kernel's headers")
    return (f"{headers}\ngit clone https://github.com/gnif/vendor-reset && dkms install ./vendor-reset\n"
            "echo vendor-reset > /etc/modules-load.d/vendor-reset.conf\n"
            f"# kernel 5.15+: make the kernel use it (at every boot, e.g. a udev rule or a libvirt hook):\n"
            f"echo device_specific > /sys/bus/pci/devices/{address}/reset_method")


def no_reset(facts: HostFacts, address: str) -> str:
    return (f"{address} cannot be reset by the kernel: use it for one VM per host boot (reboot the host before the next "
            "VM start), or assign a device that has FLR (lspci -vvv: DevCap ... FLReset+). Putting it behind its own "
            "bridge (another slot) gives it a bus reset.")


def reset_methods_off(facts: HostFacts, address: str) -> str:
    return (f"echo default > /sys/bus/pci/devices/{address}/reset_method   # the methods the kernel found, back on\n"
            "# and remove what empties it at boot (a udev rule or a unit writing reset_method): grep -r reset_method "
            "/etc/udev/rules.d /etc/systemd/system")


def free_host_console(facts: HostFacts, address: str) -> str:
    """Keep the firmware framebuffer off the GPU: sysfb/simpledrm since 5.15ish, efifb/vesafb before."""
    version = facts.kernel_version or (0, 0, 0)
    args = ["initcall_blacklist=sysfb_init"] if version >= (5, 15, 0) else ["video=efifb:off", "video=vesafb:off"]
    return (kernel_args(facts, add=args) + f"\n# or give the host its own console: set the firmware's primary display "
            f"to another GPU (or the iGPU), so {address} is not the boot VGA device")


def bind_at_boot(facts: HostFacts, device) -> str:
    ids = device.vendor_device
    driver = device.driver if device.driver not in ("", "vfio-pci") else "<its host driver>"
    conf = (f"echo 'options vfio-pci ids={ids}' > /etc/modprobe.d/vfio.conf\n"
            f"echo 'softdep {driver} pre: vfio-pci' >> /etc/modprobe.d/vfio.conf\n")
    family = facts.distro_family
    if family == "rhel":
        tail = "echo 'force_drivers+=\" vfio_pci vfio vfio_iommu_type1 \"' > /etc/dracut.conf.d/vfio.conf\ndracut -f"
    elif family == "debian":
        tail = "printf 'vfio\\nvfio_iommu_type1\\nvfio_pci\\n' >> /etc/initramfs-tools/modules\nupdate-initramfs -u"
        if facts.is_proxmox:
            tail += " -k all"
    else:
        tail = "# then rebuild the initramfs so that vfio-pci loads before the host driver"
    return conf + tail + f"\n# or, per device: driverctl set-override {device.address} vfio-pci"


def persistent_vfs(facts: HostFacts, device) -> str:
    return (f"Create N VFs at every boot: echo 'ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{device.address}\", "
            f"ATTR{{sriov_numvfs}}=\"N\"' > /etc/udev/rules.d/70-sriov.rules (N up to {device.sriov_totalvfs})")


def install_qemu(facts: HostFacts) -> str:
    family = facts.distro_family
    if family == "rhel":
        return "dnf install qemu-kvm libvirt-daemon-driver-qemu && systemctl restart libvirtd"
    if family == "debian":
        return "apt-get install qemu-system-x86 libvirt-daemon-driver-qemu && systemctl restart libvirtd"
    if family == "suse":
        return "zypper install qemu-kvm libvirt-daemon-driver-qemu && systemctl restart libvirtd"
    return "Install QEMU with KVM and libvirt's QEMU driver, then restart libvirtd."
