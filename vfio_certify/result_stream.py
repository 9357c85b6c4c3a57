"""Each check's result goes to disk as it arrives: a run holds one host at a time, not a thousand.

Results reach the controller one check at a time, the hosts interleaved (several xdist workers).
Each is appended as JSON lines to one file of the run's own, through one buffered handle (a file
per host, opened and closed for each result, cost 24,000 opens for 1,000 hosts, each one giving up
the interpreter's lock to the threads that read the workers' reports); the run keeps only each
host's name, source and the byte spans of its lines (16 bytes a result). When the run ends, the
reports are written host by host (report/outputs.py): a host's results are read back, judged into
a HostResult, written into every file and let go before the next host is read.

A line is {"check": {nodeid, when, result}} (the test's id for junit.xml, the phase that produced
the result: "setup" for a check whose set-up crashed), or {"overview": ...} / {"unreachable": ...}
from the host's reachability check.
"""
from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

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
    spans: array = field(default_factory=lambda: array("Q"))  # offset, length, offset, length, ... in the file


class ResultStream:
    def __init__(self, folder: Path):
        self.folder = folder
        self._hosts: dict[str, _Host] = {}
        self._file: Optional[BinaryIO] = None  # opened with the first result
        self._end = 0

    def __len__(self) -> int:
        return len(self._hosts)

    def __contains__(self, name: str) -> bool:
        return name in self._hosts

    def add(self, payload: dict, nodeid: str = "", when: str = "call") -> None:
        """One check's payload (session.report_payload) as the plugin receives it."""
        host = self._hosts.get(payload["host"])
        if host is None:
            host = self._hosts[payload["host"]] = _Host(payload["host"], payload["source"])
        lines = [{"check": {"nodeid": nodeid, "when": when, "result": payload["result"]}}]
        if payload.get("overview") is not None:
            lines.append({"overview": payload["overview"]})
        if payload.get("unreachable"):
            lines.append({"unreachable": payload["unreachable"]})
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.folder / "results.jsonl", "w+b")  # read back with pread
        self._file.write(data)
        host.spans.extend((self._end, len(data)))
        self._end += len(data)

    def read(self, name: str) -> tuple[HostResult, list[StreamedCheck]]:
        """A host's results as gathered: a HostResult (checks in arrival order) and each check's test id."""
        host = self._hosts[name]
        result = HostResult(host=name, source=host.source)
        checks: list[StreamedCheck] = []
        for line in self._lines(host):
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

    def _lines(self, host: _Host) -> Iterator[dict]:
        if self._file is None:  # every host has a result in the file (add)
            raise ValueError("the run's results were read after their stream was closed")
        self._file.flush()
        fd = self._file.fileno()
        for offset, length in zip(host.spans[::2], host.spans[1::2]):
            for line in os.pread(fd, length, offset).decode("utf-8").splitlines():
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
