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
    params = facts.cmdline or []
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


def firmware_iommu(facts: HostFacts) -> str:
    vm_hint = (
        "\nThis host is a virtual machine: give it a virtual IOMMU (libvirt: <iommu model='intel'>"
        "<driver intremap='on' caching_mode='on'/></iommu> with <features><ioapic driver='qemu'/></features>; "
        "QEMU: -device intel-iommu,intremap=on,caching-mode=on with -machine q35,kernel-irqchip=split)."
    )
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
    text += vm_hint if facts.iommu_vendor != "arm" and facts.cpu and facts.cpu.is_virtual_machine else ""
    return Remedy(text, FixAction("firmware", text=text))


def firmware_virtualization(facts: HostFacts) -> str:
    text = "Enable 'Intel Virtualization Technology' (VT-x) or 'SVM Mode' (AMD-V) in the firmware setup, then power-cycle the host."
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
