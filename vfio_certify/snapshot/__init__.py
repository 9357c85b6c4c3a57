"""Host snapshots (../shared/specs/snapshot.md): reading one, and packing/unpacking bundles."""
from .bundle import BundleError, pack_bundle, unpack_bundle
from .reader import FORMAT, Snapshot, SnapshotError

__all__ = ["FORMAT", "Snapshot", "SnapshotError", "BundleError", "pack_bundle", "unpack_bundle"]
