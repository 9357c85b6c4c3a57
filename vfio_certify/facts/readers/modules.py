"""Kernel modules: loaded (/proc/modules), built in and loadable (/lib/modules/$KREL), present in /sys/module."""
from __future__ import annotations

from ...collect import spec
from ...snapshot.reader import Snapshot
from ..kmodules import parse_modules_builtin, parse_modules_dep, parse_proc_modules
from ..model import HostFacts


def read_modules(snap: Snapshot, facts: HostFacts) -> None:
    text = snap.read_text(spec.PROC_MODULES.path)
    facts.modules.loaded = parse_proc_modules(text) if text is not None else None
    release = facts.kernel_release
    text = snap.read_text(spec.MODULES_BUILTIN.at(krel=release)) if release else None
    facts.modules.builtin = parse_modules_builtin(text) if text is not None else None
    text = snap.read_text(spec.MODULES_DEP.at(krel=release)) if release else None
    facts.modules.loadable = parse_modules_dep(text) if text is not None else None
    if snap.listdir(spec.SYS_MODULE.path) is not None:
        facts.modules.in_sysfs = {m.path.rsplit("/", 1)[-1] for m in spec.MODULES_IN_SYSFS if snap.exists(m.path)}
        facts.modules.in_sysfs |= set(snap.listdir(spec.SYS_MODULE.path) or [])
