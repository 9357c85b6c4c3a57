"""Waivers: known exceptions kept on record, with an owner and an expiry date.

    [[waiver]]
    check = "iommu.group_isolated[*]"   # check id, glob allowed
    host = "kvm-lab-*"                  # host as given on the command line, glob allowed (default "*")
    reason = "lab GPUs share a group with their audio function; assigned together"
    owner = "virt-team@example.com"
    expires = 2026-12-31                # a TOML date (or "2026-12-31")

Globs know `*` and `?` only: brackets are literal, in check ids ("kernel.config[CONFIG_VFIO]")
as in hosts ("ssh://root@[fe80::1]:22").

A waived failure shows as `waived` with its reason and does not fail the host. An expired
waiver stops waiving and says so. A malformed file is an error before anything runs,
naming the line.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .model import CheckResult, Outcome

REQUIRED_FIELDS = ("check", "reason", "owner", "expires")
KNOWN_FIELDS = set(REQUIRED_FIELDS) | {"host"}
WAIVABLE = (Outcome.FAILED, Outcome.ERROR, Outcome.WARNING)


class WaiverError(Exception):
    """The waiver file cannot be used; str() is one line naming the file and line."""


@dataclass(frozen=True)
class Waiver:
    check: str
    host: str
    reason: str
    owner: str
    expires: dt.date
    line: int

    def matches(self, check_id: str, host: str) -> bool:
        return _glob_match(self.check, check_id) and _glob_match(self.host, host)

    def expired(self, today: dt.date) -> bool:
        return today > self.expires

    def as_dict(self) -> dict:
        return {"reason": self.reason, "owner": self.owner, "expires": self.expires.isoformat(),
                "check": self.check, "host": self.host}


def _glob_match(pattern: str, value: str) -> bool:
    """`*` and `?` only: brackets are literal, not character classes ("kernel.config[CONFIG_VFIO]", "[fe80::1]")."""
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, value, re.S) is not None


def _lines(text: str, pattern: str) -> list[int]:
    """Numbers of the lines matching pattern, skipping lines inside multi-line strings."""
    found, quote = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if quote is None and re.match(pattern, line):
            found.append(number)
        for delimiter in re.findall(r'"""|\'\'\'', line):  # a rough toggle: enough to keep line numbers right
            quote = None if quote == delimiter else (quote or delimiter)
    return found


def _table_lines(text: str) -> list[int]:
    return _lines(text, r"\s*\[\[\s*waiver\s*\]\]")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_waivers(text: str, source: str = "waivers.toml") -> list[Waiver]:
    import tomllib  # only a run given --waivers reads TOML

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WaiverError(f"{source}: {exc}") from None
    unknown_top = set(data) - {"waiver"}
    if unknown_top:
        raise WaiverError(f"{source}: unknown table or key {sorted(unknown_top)[0]!r} (expected [[waiver]] tables)")
    tables = data.get("waiver", [])
    key_line = next(iter(_lines(text, r"\s*(\[\s*waiver\s*\]|waiver\s*=)")), 0)  # [waiver] or waiver = ...
    if not isinstance(tables, list):
        raise WaiverError(f"{source}:{key_line}: 'waiver' must be [[waiver]] tables" if key_line else
                          f"{source}: 'waiver' must be [[waiver]] tables")
    lines = _table_lines(text) or [key_line] * len(tables)  # an inline array: its key's line
    waivers = []
    for index, table in enumerate(tables):
        line = lines[index] if index < len(lines) else 0
        where = f"{source}:{line}" if line else source
        if not isinstance(table, dict):
            raise WaiverError(f"{where}: each waiver must be a [[waiver]] table, not {_shown(table)}")
        missing = [f for f in REQUIRED_FIELDS if not table.get(f)]
        if missing:
            raise WaiverError(f"{where}: waiver lacks {', '.join(missing)}")
        extra = set(table) - KNOWN_FIELDS
        if extra:
            raise WaiverError(f"{where}: unknown field {sorted(extra)[0]!r} (known: {', '.join(sorted(KNOWN_FIELDS))})")
        expires = table["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                raise WaiverError(f"{where}: expires {expires!r} is not a date (YYYY-MM-DD)") from None
        if isinstance(expires, dt.datetime):
            expires = expires.date()
        if not isinstance(expires, dt.date):
            raise WaiverError(f"{where}: expires must be a date (YYYY-MM-DD)")
        for name in ("check", "host", "reason", "owner"):
            if name in table and not isinstance(table[name], str):
                raise WaiverError(f"{where}: {name} must be a string")
        waivers.append(Waiver(table["check"], table.get("host", "*"), table["reason"], table["owner"], expires, line))
    return waivers


def load_waivers(path: str | Path) -> list[Waiver]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WaiverError(f"{path}: cannot read ({exc})") from None
    return parse_waivers(text, str(path))


def apply_waivers(result: CheckResult, host: str, waivers: list[Waiver], today: Optional[dt.date] = None) -> CheckResult:
    """The result, waived by the first live waiver that matches; expired ones are said, not applied."""
    if result.outcome not in WAIVABLE:
        return result
    today = today or dt.date.today()
    matching = [w for w in waivers if w.matches(result.id, host)]
    live = next((w for w in matching if not w.expired(today)), None)
    if live is not None:
        result.waiver = {"reason": live.reason, "owner": live.owner, "expires": live.expires.isoformat(),
                         "was": result.outcome.value}
        reason = " ".join(live.reason.split())  # a multi-line TOML reason: the message stays one line
        result.message = f"waived ({reason}; owner {live.owner}, until {live.expires}): {result.message}"
        result.outcome = Outcome.WAIVED
        return result
    if matching:
        expired = matching[0]
        result.message += f" [waiver expired on {expired.expires} (owner {expired.owner}): no longer waived]"
        result.evidence.append(f"expired waiver, line {expired.line}: {expired.reason}")
    return result
