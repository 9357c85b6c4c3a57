"""Remediations written for the host's distro family: the commands, not a wiki link."""
from __future__ import annotations

from ..facts import HostFacts


def kernel_args(facts: HostFacts, add: list[str] = (), remove: list[str] = ()) -> str:
    """How to change the kernel command line persistently on this host, then reboot."""
    add_text, remove_text = " ".join(add), " ".join(remove)
    what = " and ".join(x for x in (f"add {add_text}" if add else "", f"remove {remove_text}" if remove else "") if x)
    if facts.is_proxmox:
        return (
            f"{what.capitalize()} in /etc/kernel/cmdline (systemd-boot) or GRUB_CMDLINE_LINUX_DEFAULT in "
            "/etc/default/grub (GRUB), then:\nproxmox-boot-tool refresh\nreboot"
        )
    family = facts.distro_family
    if family == "rhel":
        lines = []
        if add:
            lines.append(f'grubby --update-kernel=ALL --args="{add_text}"')
        if remove:
            lines.append(f'grubby --update-kernel=ALL --remove-args="{remove_text}"')
        lines.append("reboot")
        lines.append(
            f"# or: {what} in GRUB_CMDLINE_LINUX in /etc/default/grub, then "
            "grub2-mkconfig -o /boot/grub2/grub.cfg (BIOS) or -o /boot/efi/EFI/$(. /etc/os-release; echo $ID)/grub.cfg (UEFI)"
        )
        return "\n".join(lines)
    if family == "debian":
        return f"{what.capitalize()} in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then:\nupdate-grub\nreboot"
    if family == "suse":
        return (
            f"{what.capitalize()} in GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then:\n"
            "grub2-mkconfig -o /boot/grub2/grub.cfg\nreboot"
        )
    return f"{what.capitalize()} on the kernel command line in the boot loader's configuration, then reboot."


def firmware_iommu(facts: HostFacts) -> str:
    vm_hint = (
        "\nThis host is a virtual machine: give it a virtual IOMMU (libvirt: <iommu model='intel'>"
        "<driver intremap='on' caching_mode='on'/></iommu> with <features><ioapic driver='qemu'/></features>; "
        "QEMU: -device intel-iommu,intremap=on,caching-mode=on with -machine q35,kernel-irqchip=split)."
    )
    if facts.iommu_vendor == "amd":
        text = (
            "Enable the IOMMU in the firmware setup (AMD CBS / NBIO Common Options: IOMMU = Enabled; "
            "also SVM Mode). A firmware that publishes no IVRS table cannot enable AMD-Vi: update the firmware."
        )
    else:
        text = (
            "Enable Intel VT-d ('Intel Virtualization Technology for Directed I/O') in the firmware setup, "
            "then power-cycle the host."
        )
    return text + (vm_hint if facts.cpu and facts.cpu.is_virtual_machine else "")


def load_module(facts: HostFacts, module: str) -> str:
    dashed = module.replace("_", "-")
    return (
        f"modprobe {dashed}\n"
        f"# load it at every boot:\necho {dashed} > /etc/modules-load.d/{dashed}.conf"
    )


def reinstall_modules(facts: HostFacts) -> str:
    release = facts.kernel_release or "$(uname -r)"
    family = facts.distro_family
    if family == "rhel":
        return f"dnf reinstall kernel-modules-core-{release} kernel-core-{release}"
    if family == "debian":
        return f"apt-get install --reinstall linux-image-{release}   # Ubuntu: also linux-modules-{release}"
    return f"Reinstall the module package of kernel {release}."
