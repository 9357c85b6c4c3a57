"""Typed facts about a host, parsed from a snapshot by pure, forgiving parsers."""
from .host import HostFacts, read_host_facts

__all__ = ["HostFacts", "read_host_facts"]
