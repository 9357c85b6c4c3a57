"""Each check's result goes to disk as it arrives: a run holds one host at a time, not a thousand.

Results reach the controller one check at a time, the hosts interleaved (several xdist workers).
Each is appended as one JSON line to its host's file in a folder of the run's own; the run keeps
only each host's name, source and file. When the run ends, the reports are written host by host
(report/outputs.py): a host's results are read back, judged into a HostResult, written into
every file and let go before the next host is read.

A line is {"check": {nodeid, when, result}} (the test's id for junit.xml, the phase that produced
the result: "setup" for a check whose set-up crashed), or {"overview": ...} / {"unreachable": ...}
from the host's reachability check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .model import CheckResult, HostOverview, HostResult


@dataclass
class StreamedCheck:
    """A check's result with what junit.xml names it by."""

    result: CheckResult
    nodeid: str = ""
    when: str = "call"


@dataclass
class _Host:
    name: str
    source: str
    path: Path


class ResultStream:
    def __init__(self, folder: Path):
        self.folder = folder
        self._hosts: dict[str, _Host] = {}

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, name: str) -> bool:
        return name in self._hosts

    def add(self, payload: dict, nodeid: str = "", when: str = "call") -> None:
        """One check's payload (session.report_payload) as the plugin receives it."""
        host = self._hosts.get(payload["host"])
        if host is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            host = _Host(payload["host"], payload["source"], self.folder / f"host-{len(self._hosts)}.jsonl")
            self._hosts[host.name] = host
        lines = [{"check": {"nodeid": nodeid, "when": when, "result": payload["result"]}}]
        if payload.get("overview") is not None:
            lines.append({"overview": payload["overview"]})
        if payload.get("unreachable"):
            lines.append({"unreachable": payload["unreachable"]})
        with host.path.open("a", encoding="utf-8") as out:
            out.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))

    def read(self, name: str) -> tuple[HostResult, list[StreamedCheck]]:
        """A host's results as gathered: a HostResult (checks in arrival order) and each check's test id."""
        host = self._hosts[name]
        result = HostResult(host=name, source=host.source)
        checks: list[StreamedCheck] = []
        for line in _lines(host.path):
            if "check" in line:
                check = line["check"]
                streamed = StreamedCheck(CheckResult.from_summary(check["result"]), check.get("nodeid", ""),
                                         check.get("when", "call"))
                checks.append(streamed)
                result.checks.append(streamed.result)
            elif "overview" in line:
                result.overview = HostOverview.from_dict(line["overview"])
            elif "unreachable" in line:
                result.unreachable_reason = line["unreachable"]
        return result, checks


def _lines(path: Path) -> Iterator[dict]:
    with path.open(encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)

