"""What the next boot will put on the kernel command line.

Sources, by distro: /etc/default/grub (GRUB_CMDLINE_LINUX and _DEFAULT; every
distro with GRUB) and the /etc/default/grub.d/*.cfg that grub-mkconfig sources after it
(Debian and Ubuntu; cloud images set GRUB_CMDLINE_LINUX_DEFAULT there), `grubby --info=DEFAULT` (RHEL family: the authoritative BLS
entry), /etc/kernel/cmdline (systemd-boot, Proxmox).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from .cmdline import Param, parse_cmdline

_ASSIGN = re.compile(r"^\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(.*)$")


@dataclass
class BootConfig:
    source: str = ""  # the file or command the args were read from
    args: list[Param] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)  # the lines read
    assigned_in: dict[str, str] = field(default_factory=dict)  # GRUB variable -> the file that set it last


def _shell_value(raw: str, variables: dict[str, str]) -> str:
    """A shell assignment's value: quotes removed, $VAR/${VAR} expanded from earlier lines."""
    try:
        words = shlex.split(raw, comments=True, posix=True)
    except ValueError:  # unbalanced quote in a hand-edited file: take it as written
        words = [raw.strip().strip("'\"")]
    value = " ".join(words)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), ""), value)


def parse_default_grub(text: str, source: str = "/etc/default/grub", dropins: list[tuple[str, str]] = ()) -> BootConfig:
    """/etc/default/grub, then its drop-ins [(path, text)] in the order grub-mkconfig sources them."""
    variables: dict[str, str] = {}
    evidence, assigned_in = [], {}
    for path, body in [(source, text), *dropins]:
        for line in body.splitlines():
            match = _ASSIGN.match(line)
            if match:
                variables[match.group(1)] = _shell_value(match.group(2), variables)
                assigned_in[match.group(1)] = path
                evidence.append(line.strip() if path == source else f"{path}: {line.strip()}")
    joined = " ".join(v for v in (variables.get("GRUB_CMDLINE_LINUX"), variables.get("GRUB_CMDLINE_LINUX_DEFAULT")) if v)
    return BootConfig(source, parse_cmdline(joined), evidence, assigned_in)


def parse_grubby_info(text: str, source: str = "grubby --info=DEFAULT") -> BootConfig:
    for line in text.splitlines():
        if line.startswith("args="):
            value = _shell_value(line[len("args="):], {})
            return BootConfig(source, parse_cmdline(value), [line.strip()])
    return BootConfig(source)


def parse_kernel_cmdline_file(text: str, source: str = "/etc/kernel/cmdline") -> BootConfig:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return BootConfig(source, parse_cmdline(" ".join(lines)), lines[:3])
