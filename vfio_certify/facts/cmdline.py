"""Kernel command line tokens, split the way the kernel does (lib/cmdline.c next_arg)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Param:
    raw: str  # as written, e.g. 'intel-iommu=on'
    name: str  # the kernel's reading: dashes and underscores are equal in names
    value: Optional[str]  # None for a bare flag ('quiet')

    def __str__(self) -> str:
        return self.raw


def normalize_name(name: str) -> str:
    return name.replace("-", "_")


def split_cmdline(text: str) -> list[str]:
    """Whitespace-separated args; double quotes group (and are dropped); stops at ' -- '."""
    args: list[str] = []
    current: list[str] = []
    in_quote = False
    started = False
    for ch in text.strip():
        if ch == '"':
            in_quote = not in_quote
            started = True
            continue
        if ch.isspace() and not in_quote:
            if started:
                args.append("".join(current))
                current, started = [], False
            continue
        current.append(ch)
        started = True
    if started:
        args.append("".join(current))
    if "--" in args:
        args = args[: args.index("--")]
    return args


def parse_cmdline(text: str) -> list[Param]:
    params = []
    for arg in split_cmdline(text.replace("\x00", " ")):
        name, sep, value = arg.partition("=")
        params.append(Param(raw=arg, name=normalize_name(name), value=value if sep else None))
    return params


def values_of(params: list[Param], name: str) -> list[str]:
    """Every value given to `name`, in order (the kernel applies them in order)."""
    name = normalize_name(name)
    return [p.value if p.value is not None else "" for p in params if p.name == name]


def damage(text: str) -> str:
    """Why a /proc/cmdline text cannot be the whole command line ('' when it can)."""
    if not text.strip():
        return "/proc/cmdline is empty"
    if "\ufffd" in text or any(ord(c) < 32 and c != "\t" for c in text):
        return "/proc/cmdline holds binary bytes"
    return ""
