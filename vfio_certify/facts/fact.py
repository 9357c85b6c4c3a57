"""Fact: one fact about a host and which of the three it is, with the source that says so.

Every fact is *known* (a value, read from `source`), *known absent* (the source was collected and
the thing is not there) or *not collected* (nothing was read: the host may or may not have it). A
rule asks the fact which it is, so None or "" are never read as "absent" by accident:

    table = facts.iommu_table
    if table.unknown: return not_collected(..., table.source)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

from ..snapshot.reader import PathState

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    state: PathState  # PRESENT (known), ABSENT (known absent), NOT_COLLECTED
    source: str  # where it was read, or (not collected) what would have told
    value: Optional[T] = None

    @classmethod
    def known(cls, value: T, source: str) -> "Fact[T]":
        return cls(PathState.PRESENT, source, value)

    @classmethod
    def absent(cls, source: str) -> "Fact[T]":
        return cls(PathState.ABSENT, source)

    @classmethod
    def not_collected(cls, source: str) -> "Fact[T]":
        return cls(PathState.NOT_COLLECTED, source)

    @property
    def present(self) -> bool:
        return self.state is PathState.PRESENT

    @property
    def absent_on_host(self) -> bool:
        return self.state is PathState.ABSENT

    @property
    def unknown(self) -> bool:
        return self.state is PathState.NOT_COLLECTED
