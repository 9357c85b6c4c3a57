"""What the next boot will put on the kernel command line.

Sources, by distro: /etc/default/grub (GRUB_CMDLINE_LINUX and _DEFAULT; every
distro with GRUB), `grubby --info=DEFAULT` (RHEL family: the authoritative BLS
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


def _shell_value(raw: str, variables: dict[str, str]) -> str:
    """A shell assignment's value: quotes removed, $VAR/${VAR} expanded from earlier lines."""
    try:
        words = shlex.split(raw, comments=True, posix=True)
    except ValueError:  # unbalanced quote in a hand-edited file: take it as written
        words = [raw.strip().strip("'\"")]
    value = " ".join(words)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), ""), value)


def parse_default_grub(text: str, source: str = "/etc/default/grub") -> BootConfig:
    variables: dict[str, str] = {}
    evidence = []
    for line in text.splitlines():
        match = _ASSIGN.match(line)
        if match:
            variables[match.group(1)] = _shell_value(match.group(2), variables)
            evidence.append(line.strip())
    joined = " ".join(v for v in (variables.get("GRUB_CMDLINE_LINUX"), variables.get("GRUB_CMDLINE_LINUX_DEFAULT")) if v)
    return BootConfig(source, parse_cmdline(joined), evidence)


def parse_grubby_info(text: str, source: str = "grubby --info=DEFAULT") -> BootConfig:
    for line in text.splitlines():
        if line.startswith("args="):
            value = _shell_value(line[len("args="):], {})
            return BootConfig(source, parse_cmdline(value), [line.strip()])
    return BootConfig(source)


def parse_kernel_cmdline_file(text: str, source: str = "/etc/kernel/cmdline") -> BootConfig:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return BootConfig(source, parse_cmdline(" ".join(lines)), lines[:3])
