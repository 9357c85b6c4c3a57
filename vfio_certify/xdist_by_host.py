"""With pytest-xdist (-j), a host's checks all go to one worker: one collection per host.

xdist's own loadgroup cannot be used: it renames node ids, which pytest 9 no longer
honours. This scheduler groups by the host named first in each check's parameters. The
controller has node ids only, not items: a host is matched as pytest writes it into the id
(non-ASCII escaped, `kvm-\\xfc`), and as given (escaping disabled by the ini option).

With `split` (a run of the command's plugin), each worker collects only its share of the hosts
(HostShares: every n-th host, n workers) instead of every host's tests: a pytest item costs ~5 KiB and
every xdist worker otherwise holds every host's items (24,000 for 1,000 hosts). The workers'
collections then differ: each is given its own hosts' checks, all at once, and a crashed worker's
replacement is given the crashed one's share, and the hosts it had not finished.

Linear in hosts: a node id's host is found by dictionary look-ups of its parameters' prefixes
(not by trying every host); a check's index in the collection is a dictionary look-up (xdist
searches the list for each); a host whose checks have all completed is dropped from the worker's
assigned work, which xdist scans on every completed check. Each was quadratic for 1,000 hosts.
"""
from __future__ import annotations

from typing import Any, Optional

import pytest


DISTRIBUTIONS = ("load", "loadgroup", "loadscope")  # the ones this scheduler replaces
SHARE_KEY = "vfio_certify_share"  # in a worker's workerinput: [its share, how many shares]


def share_of(targets: list, workerinput: Optional[dict]) -> list:
    """The targets a worker collects: every target in one process, its share under a split -j run."""
    share = (workerinput or {}).get(SHARE_KEY)
    return targets[share[0]::share[1]] if share else targets


class HostShares:
    """The controller's side of the split: which share of the hosts each worker collects."""

    NAME = "vfio-certify-host-shares"

    def __init__(self) -> None:
        self.free: list[int] = []  # shares of crashed workers, for their replacements
        self.of: dict[str, int] = {}  # worker id -> its share
        self.next = 0

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        count = node.workerinput["workercount"]
        if self.free:
            share = self.free.pop(0)
        else:
            share, self.next = self.next % count, self.next + 1
        self.of[node.gateway.id] = share
        node.workerinput[SHARE_KEY] = [share, count]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        share = self.of.pop(node.gateway.id, None)
        if share is not None and error is not None:
            self.free.append(share)


def by_host_scheduler(config: Any, log: Any, hosts: list[str], split: bool = False) -> Optional[Any]:
    """xdist's load-scope scheduling with one scope per host in `hosts`; None for another --dist. With `split`,
    each worker has collected its own share of the hosts (HostShares) and runs it."""
    if config.option.dist not in DISTRIBUTIONS:
        return None  # the user chose another distribution on purpose
    try:  # how pytest escapes non-ASCII ids (kvm-ü -> kvm-\xfc); private, so with a fallback of the same rule
        from _pytest.compat import ascii_escaped
    except ImportError:  # pragma: no cover
        def ascii_escaped(text: str) -> str:
            return text.encode("unicode_escape").decode("ascii")
    from xdist.scheduler import LoadScopeScheduling

    spelled = {form: name for name in hosts for form in (name, ascii_escaped(name))}

    def host_of(params: str) -> Optional[str]:
        """The longest host spelling that is `params` or starts it followed by "-" (the next parameter)."""
        if params in spelled:
            return spelled[params]
        end = len(params)
        while (end := params.rfind("-", 0, end)) > 0:
            if params[:end] in spelled:
                return spelled[params[:end]]
        return None

    class ByHost(LoadScopeScheduling):
        def __init__(self, config: Any, log: Any = None) -> None:
            super().__init__(config, log)
            self._indexes: dict[Any, dict[str, int]] = {}  # per worker: node id -> its index in the collection

        def _split_scope(self, nodeid: str) -> str:
            params = nodeid[nodeid.find("[") + 1:-1] if nodeid.endswith("]") and "[" in nodeid else ""
            return host_of(params) or nodeid

        def _assign_work_unit(self, node: Any) -> None:
            scope, work_unit = self.workqueue.popitem(last=False)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            index = self._indexes.get(node)
            if index is None:
                index = self._indexes[node] = {n: i for i, n in enumerate(self.registered_collections[node])}
            node.send_runtest_some([index[nodeid] for nodeid, completed in work_unit.items() if not completed])

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            super().mark_test_complete(node, item_index, duration)
            work = self.assigned_work.get(node, {})
            scope = self._split_scope(self.registered_collections[node][item_index])
            if scope in work and all(work[scope].values()):
                del work[scope]  # done: nothing of it to re-run if the worker crashes, nothing to count

    class SplitByHost(ByHost):
        def add_node_collection(self, node: Any, collection: Any) -> None:
            assert node in self.assigned_work
            self.registered_collections[node] = list(collection)  # its own hosts: collections differ

        def schedule(self) -> None:
            assert self.collection_is_completed
            if self.collection is None:  # the first time: every worker's hosts are waiting
                self.collection = [n for each in self.registered_collections.values() for n in each]
                for nodeid in self.collection:
                    self.workqueue.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            for node in self.nodes:
                self._reschedule(node)

        def _reschedule(self, node: Any) -> None:
            """Static: a worker is sent every waiting host it collected, then told to stop when it is done."""
            if node.shutting_down or node not in self.registered_collections:
                return
            index = self._indexes.get(node)
            if index is None:
                index = self._indexes[node] = {n: i for i, n in enumerate(self.registered_collections[node])}
            mine = [scope for scope, unit in self.workqueue.items() if all(n in index for n in unit)]
            indexes = []
            for scope in mine:
                unit = self.workqueue.pop(scope)
                self.assigned_work[node][scope] = unit
                indexes += [index[nodeid] for nodeid, completed in unit.items() if not completed]
            if indexes:
                node.send_runtest_some(indexes)
            node.shutdown()  # after what it was sent

    return SplitByHost(config, log) if split else ByHost(config, log)
