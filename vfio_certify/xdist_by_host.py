"""With pytest-xdist (-j), a host's checks all go to one worker: one collection per host.

xdist's own loadgroup cannot be used: it renames node ids, which pytest 9 no longer
honours. This scheduler groups by the host named first in each check's parameters. The
controller has node ids only, not items: a host is matched as pytest writes it into the id
(non-ASCII escaped, `kvm-\\xfc`), and as given (escaping disabled by the ini option).

With `split` (a run of the command's plugin), a worker process collects only a batch of the hosts
(HostBatches: at most --hosts-per-worker consecutive hosts) instead of every host's tests, judges
them and exits; a fresh worker then takes the next batch. A pytest item costs about 3 KiB and a
worker holds its items from collection to its end: so a worker's memory is that of one batch,
whatever the fleet's size. Each worker is sent its hosts a few at a time (IN_FLIGHT), the next
once the controller has taken in a finished host's reports: a worker never runs far ahead of
the controller, whose queue of reports not yet read would otherwise grow with the fleet. A
crashed worker's replacement collects the crashed one's batch and runs the hosts it had not
finished.

Linear in hosts: a node id's host is found by dictionary look-ups of its parameters' prefixes
(not by trying every host); a check's index in the collection is a dictionary look-up (xdist
searches the list for each); a host whose checks have all completed is dropped from the worker's
assigned work, which xdist scans on every completed check. Each was quadratic for 1,000 hosts.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Optional

import pytest


DISTRIBUTIONS = ("load", "loadgroup", "loadscope")  # the ones this scheduler replaces
SHARE_KEY = "vfio_certify_share"  # in a worker's workerinput: [first, end) of the targets it collects
IN_FLIGHT = 3  # hosts sent to a worker and not yet finished, as the controller knows


def share_of(targets: list, workerinput: Optional[dict]) -> list:
    """The targets a worker collects: every target in one process, its batch under a split -j run."""
    share = (workerinput or {}).get(SHARE_KEY)
    return targets[share[0]:share[1]] if share else targets


def plan_batches(hosts: int, workers: int, per_worker: int) -> deque:
    """[first, end) of each batch, in order: at most per_worker hosts each, as even as can be, and a multiple
    of the workers in number where there are hosts enough (each worker's last batch ends about when the
    others' do); the batch of a worker with no host is empty."""
    rounds = max(1, -(-hosts // max(1, per_worker * workers)))
    count = min(rounds * workers, max(hosts, workers))
    ends = [hosts * i // count for i in range(count + 1)]
    return deque(zip(ends, ends[1:]))


class HostBatches:
    """The controller's side of the split: which batch of the hosts each worker collects, and a fresh worker
    for the next batch when one has finished its own."""

    NAME = "vfio-certify-host-batches"

    def __init__(self, config: Any, hosts: int, per_worker: int):
        self.config, self.hosts, self.per_worker = config, hosts, per_worker
        self.waiting: Optional[deque] = None  # planned when the first worker starts: then their number is known
        self.of: dict[str, tuple[int, int]] = {}  # worker id -> its batch
        self.collecting: set[str] = set()  # workers started whose collection has not arrived
        self.items: dict[tuple[int, int], int] = {}  # batch -> how many tests its worker collected
        self.session: Any = None

    @property
    def outstanding(self) -> bool:
        """Hosts no worker has collected yet: a batch waiting for a worker, or a worker still collecting."""
        return bool(self.waiting) or bool(self.collecting)

    def pytest_sessionstart(self, session: Any) -> None:
        self.session = session

    def collected(self, node: Any, tests: int) -> None:
        """A worker's collection arrived. xdist takes its number of tests for the run's, which the terminal's
        progress ([ 42%]) divides by: the run's is set to every batch's, estimated from those collected so far."""
        self.collecting.discard(node.gateway.id)
        batch = self.of.get(node.gateway.id)
        if batch is None or self.session is None:
            return
        self.items[batch] = tests
        hosts = sum(end - first for first, end in self.items)
        if hosts:
            self.session.testscollected = round(sum(self.items.values()) * max(self.hosts, hosts) / hosts)

    def quiet_worker_status(self) -> None:
        """On a terminal xdist shows its workers' state by rewriting the current line: right while the first
        workers start, but a later batch's worker would write over the line of test progress."""
        status = self.config.pluginmanager.getplugin("terminaldistreporter")
        if status is not None and hasattr(status, "_isatty"):  # private: if it is not there, nothing changes
            status._isatty = False

    def _dsession(self) -> Any:
        return self.config.pluginmanager.getplugin("dsession")

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.waiting is None:  # one batch per worker if xdist cannot start a worker itself (private API)
            per_worker = self.per_worker if hasattr(self._dsession(), "_clone_node") else self.hosts
            self.waiting = plan_batches(self.hosts, node.workerinput["workercount"], per_worker)
        batch = self.waiting.popleft() if self.waiting else (0, 0)
        self.of[node.gateway.id] = batch
        self.collecting.add(node.gateway.id)
        node.workerinput[SHARE_KEY] = list(batch)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        batch = self.of.pop(node.gateway.id, None)
        self.collecting.discard(node.gateway.id)
        if batch is None:
            return
        if error is not None:  # xdist starts a replacement: it collects this batch and runs what was not finished
            self.waiting.appendleft(batch)
            return
        dsession, output = self._dsession(), getattr(node, "workeroutput", {})
        # Not interrupted, not stopped (-x), the run not ending: a fresh worker takes the next batch
        if self.waiting and dsession is not None and output.get("exitstatus") in (0, 1, 5) \
                and not (output.get("shouldfail") or output.get("shouldstop")) \
                and not (dsession.shuttingdown or dsession.shouldstop):
            node.ensure_teardown()  # its process exits: one worker per place at a time
            dsession._clone_node(node)  # it is given the next batch (pytest_configure_node)


def by_host_scheduler(config: Any, log: Any, hosts: list[str], split: bool = False,
                      batches: Optional[HostBatches] = None) -> Optional[Any]:
    """xdist's load-scope scheduling with one scope per host in `hosts`; None for another --dist. With `split`,
    each worker has collected its own batch of the hosts (HostBatches) and runs it."""
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

        def _index(self, node: Any) -> dict[str, int]:
            index = self._indexes.get(node)
            if index is None:
                index = self._indexes[node] = {n: i for i, n in enumerate(self.registered_collections[node])}
            return index

        def _assign_work_unit(self, node: Any) -> None:
            scope, work_unit = self.workqueue.popitem(last=False)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            index = self._index(node)
            node.send_runtest_some([index[nodeid] for nodeid, completed in work_unit.items() if not completed])

        def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
            nodeid = self.registered_collections[node][item_index]
            scope = self._split_scope(nodeid)
            work = self.assigned_work[node]
            work[scope][nodeid] = True
            if all(work[scope].values()):
                del work[scope]  # done: nothing of it to re-run if the worker crashes, nothing to count
            self._reschedule(node)

    class SplitByHost(ByHost):
        def __init__(self, config: Any, log: Any = None) -> None:
            super().__init__(config, log)
            self.started = False  # the first schedule() is done: later workers' hosts are queued as they arrive
            self.queued: set[str] = set()  # every host ever queued (a replacement's finished hosts are not again)
            self.mine: dict[Any, deque] = {}  # per worker: the hosts it collected and has not been sent, in order

        @property
        def collection_is_completed(self) -> bool:
            return self.started or len(self.registered_collections) >= self.numnodes

        @property
        def tests_finished(self) -> bool:
            if not self.collection_is_completed or self.workqueue or (batches is not None and batches.outstanding):
                return False
            return all(self._pending_of(work) < 2 for work in self.assigned_work.values())

        @property
        def has_pending(self) -> bool:
            return super().has_pending or (self.started and batches is not None and batches.outstanding)

        def add_node_collection(self, node: Any, collection: Any) -> None:
            assert node in self.assigned_work
            self.registered_collections[node] = list(collection)  # its own hosts: collections differ
            if batches is not None:
                batches.collected(node, len(collection))
            if self.started:
                self._queue(node)

        def _queue(self, node: Any) -> None:
            """The worker's hosts into the work queue; a host queued before (the batch of a crashed worker, whose
            unfinished hosts are in the queue again) is only the worker's to run if it is still waiting."""
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.registered_collections[node]:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            mine = self.mine[node] = deque()
            for scope, unit in units.items():
                if scope not in self.queued:
                    self.queued.add(scope)
                    self.workqueue[scope] = unit
                if scope in self.workqueue:
                    mine.append(scope)

        def schedule(self) -> None:
            assert self.collection_is_completed
            if not self.started:  # the first time: every worker's hosts are waiting
                self.started = True
                if batches is not None:
                    batches.quiet_worker_status()
                for node in self.registered_collections:
                    self._queue(node)
            for node in self.nodes:
                self._reschedule(node)

        def _reschedule(self, node: Any) -> None:
            """A worker is sent its next waiting hosts while fewer than IN_FLIGHT of its hosts are unfinished, then
            told to stop once it has been sent every host it collected."""
            mine = self.mine.get(node)
            if node.shutting_down or mine is None:
                return
            work, index, indexes = self.assigned_work[node], self._index(node), []
            while mine and len(work) < IN_FLIGHT:
                scope = mine.popleft()
                unit = self.workqueue.pop(scope, None)
                todo = [index[nodeid] for nodeid, completed in (unit or {}).items() if not completed]
                if todo:
                    work[scope] = unit
                    indexes += todo
            if indexes:
                node.send_runtest_some(indexes)
            if not mine:
                node.shutdown()  # after what it was sent

        def remove_node(self, node: Any) -> Optional[str]:
            crashed = super().remove_node(node)  # a crashed worker's unfinished hosts go back to the queue
            for kept in (self.registered_collections, self._indexes, self.mine):
                kept.pop(node, None)
            return crashed

    return SplitByHost(config, log) if split else ByHost(config, log)
