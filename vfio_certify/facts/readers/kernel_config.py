"""The running kernel's build configuration: /boot/config-$KREL, else /proc/config.gz (inflated, bounded)."""
from __future__ import annotations

import zlib

from ...collect import spec
from ...snapshot.reader import PathState, Snapshot, decode
from ..kconfig import parse_kernel_config
from ..model import HostFacts

_MAX_CONFIG_BYTES = 16 * 1024 * 1024


def read_kernel_config(snap: Snapshot, facts: HostFacts) -> None:
    release = facts.kernel_release
    candidates = [spec.BOOT_CONFIG.at(krel=release)] if release else []
    if not release:  # any config-* in /boot
        prefix = spec.BOOT_CONFIG.at(krel="").rsplit("/", 1)[1]
        candidates = [f"{spec.BOOT.path}/{n}" for n in (snap.listdir(spec.BOOT.path) or []) if n.startswith(prefix)][:1]
    for path in candidates:
        text = snap.read_text(path)
        if text is not None:
            facts.kernel_config = parse_kernel_config(text, path)
            facts.kernel_config_state = PathState.PRESENT
            return
    gz = spec.PROC_CONFIG_GZ.path
    data = snap.read_bytes(gz)
    if data is not None:
        # Inflate at most _MAX_CONFIG_BYTES (a hostile bundle may carry a gzip bomb); a cut stream
        # still yields what was written before the cut, and the config then counts as cut short.
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(data, _MAX_CONFIG_BYTES)
            problem = "" if inflater.eof else (
                "larger than 16 MiB inflated" if inflater.unconsumed_tail else "the gzip stream is cut short")
        except zlib.error as exc:
            raw, problem = b"", f"damaged gzip ({exc})"
        if problem:
            facts.notes.append(f"{gz}: {problem}; read {len(raw)} bytes of it")
        if not raw:
            facts.kernel_config_state = PathState.NOT_COLLECTED
            return
        facts.kernel_config = parse_kernel_config(decode(raw), gz)
        if problem and not facts.kernel_config.truncated:
            facts.kernel_config.truncated, facts.kernel_config.truncated_why = True, problem
        facts.kernel_config_state = PathState.PRESENT
        return
    # Without a release, /boot/config- stands for "any config": absent when /boot was read and held none.
    boot = snap.state(candidates[0] if candidates else spec.BOOT_CONFIG.at(krel=""))
    proc = snap.state(gz)
    both_absent = boot is PathState.ABSENT and proc is PathState.ABSENT
    facts.kernel_config_state = PathState.ABSENT if both_absent else PathState.NOT_COLLECTED
