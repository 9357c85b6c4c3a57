"""Typed facts about a host: the model (model.py), pure forgiving parsers (one module per source format),
and the readers that fill the model from a snapshot (readers/, one module per area)."""
from .model import HostFacts, ModuleFacts, NetInterface
from .readers import read_host_facts

__all__ = ["HostFacts", "ModuleFacts", "NetInterface", "read_host_facts"]
