"""Kernel modules: loaded (/proc/modules), built in (modules.builtin), loadable (modules.dep)."""
from __future__ import annotations

import re

_KO = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")


def module_name(name_or_path: str) -> str:
    """vfio-pci, kernel/drivers/vfio/pci/vfio-pci.ko.xz -> vfio_pci (the kernel's spelling)."""
    base = name_or_path.strip().rsplit("/", 1)[-1]
    return _KO.sub("", base).replace("-", "_")


def parse_proc_modules(text: str) -> dict[str, str]:
    """name -> state (Live, Loading, Unloading)."""
    modules: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0].replace("_", "").isalnum():
            modules[module_name(fields[0])] = fields[4]
        elif fields and fields[0].replace("_", "").isalnum():
            modules[module_name(fields[0])] = "Live"
    return modules


def parse_modules_builtin(text: str) -> set[str]:
    return {module_name(line) for line in text.splitlines() if _KO.search(line.strip())}


def parse_modules_dep(text: str) -> dict[str, str]:
    """name -> path of the module file, for every module the kernel can load."""
    modules: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, _deps = line.partition(":")
        path = path.strip()
        if sep and _KO.search(path):
            modules.setdefault(module_name(path), path)
    return modules
