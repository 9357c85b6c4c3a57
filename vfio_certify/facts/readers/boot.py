"""The running command line (/proc/cmdline) and the boot configuration that sets the next one."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..bootconfig import parse_default_grub, parse_grubby_info, parse_kernel_cmdline_file
from ..cmdline import parse_cmdline
from ..model import HostFacts


def read_cmdline(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text(spec.PROC_CMDLINE.path)
    if text is not None:
        facts.cmdline_text = text.strip()
        facts.cmdline = parse_cmdline(text)


def read_boot_configs(snap: Snapshot, facts: HostFacts) -> None:
    grub = spec.DEFAULT_GRUB.path
    text = snap.read_text(grub)
    if text is not None:
        dropins_folder = spec.DEFAULT_GRUB_DROPINS.folder()
        dropins = [(spec.DEFAULT_GRUB_DROPINS.at(n), snap.read_text(spec.DEFAULT_GRUB_DROPINS.at(n)) or "")
                   for n in snap.listdir(dropins_folder) or [] if n.endswith(".cfg")]
        facts.boot_configs.append(parse_default_grub(text, grub, dropins))
    kernel_cmdline = spec.KERNEL_CMDLINE_FILE.path
    text = snap.read_text(kernel_cmdline)
    if text is not None:
        facts.boot_configs.append(parse_kernel_cmdline_file(text, kernel_cmdline))
    grubby = snap.command(spec.GRUBBY_DEFAULT.line)
    if grubby is not None and grubby.ok and grubby.stdout.strip():
        facts.boot_configs.append(parse_grubby_info(grubby.stdout))
