"""Collecting a host into a snapshot: what (spec), how (script), and the one round trip (runner)."""
from .runner import CollectError, Target, collect_snapshot

__all__ = ["CollectError", "Target", "collect_snapshot"]
