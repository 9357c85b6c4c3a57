"""The -j scheduler: each host's checks on one worker, every check run once, and its bookkeeping bounded."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from vfio_certify.xdist_by_host import IN_FLIGHT, SHARE_KEY, HostBatches, by_host_scheduler, plan_batches, share_of

CHECKS = ["checks/test_cpu.py::test_cpu_virtualization[{h}]", "checks/test_iommu.py::test_iommu_group[{h}-07:00.1]",
          "checks/test_vfio.py::test_vfio_module[{h}]"]


class Worker:
    """What the scheduler sees of an xdist worker: it is sent indexes into its collection to run."""

    def __init__(self, name: str):
        self.name, self.shutting_down, self.sent = name, False, []
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent.extend(indexes)

    def shutdown(self) -> None:
        self.shutting_down = True

    def ensure_teardown(self) -> None:
        self.torn_down = True


def scheduler_for(hosts: list[str], workers: int = 2):
    config = SimpleNamespace(option=SimpleNamespace(dist="load", loadscopereorder=True), getvalue=lambda name: [f"{workers}*popen"])
    return by_host_scheduler(config, None, hosts)


def test_a_host_named_like_the_start_of_another_keeps_its_own_checks():
    scheduler = scheduler_for(["kvm", "kvm-1", "/srv/bundles/kvm-1-old"])
    assert scheduler._split_scope("checks/test_cpu.py::test_cpu_virtualization[kvm]") == "kvm"
    assert scheduler._split_scope("checks/test_iommu.py::test_iommu_group[kvm-07:00.1]") == "kvm"
    assert scheduler._split_scope("checks/test_iommu.py::test_iommu_group[kvm-1-07:00.1]") == "kvm-1"
    assert scheduler._split_scope("checks/test_iommu.py::test_iommu_group[/srv/bundles/kvm-1-old-07:00.1]") \
        == "/srv/bundles/kvm-1-old"
    assert scheduler._split_scope("tests/test_other.py::test_x[nobody]") == "tests/test_other.py::test_x[nobody]"


def test_every_check_runs_once_on_its_hosts_worker_and_finished_hosts_are_forgotten():
    hosts = [f"host-{i:03d}" for i in range(60)]
    collection = [c.format(h=h) for h in hosts for c in CHECKS]
    scheduler = scheduler_for(hosts)
    workers = [Worker("gw0"), Worker("gw1")]
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    ran: dict[str, str] = {}
    largest_bookkeeping = 0
    while any(w.sent for w in workers):  # each worker completes what it was sent, in order, one at a time
        for worker in workers:
            if worker.sent:
                index = worker.sent.pop(0)
                assert collection[index] not in ran, "a check was run twice"
                ran[collection[index]] = worker.name
                scheduler.mark_test_complete(worker, index)
                largest_bookkeeping = max(largest_bookkeeping, *(len(scheduler.assigned_work[w]) for w in workers))
    assert sorted(ran) == sorted(collection)
    for host in hosts:  # one worker per host: one collection of its snapshot
        assert len({ran[c.format(h=host)] for c in CHECKS}) == 1
    assert {ran[n] for n in ran} == {"gw0", "gw1"}  # both workers had work
    assert largest_bookkeeping <= 3  # the hosts in flight, not every host the worker has judged
    assert scheduler.tests_finished and not scheduler.has_pending


class DSession:
    """What HostBatches uses of xdist's controller: whether the run is ending, and starting a fresh worker."""

    def __init__(self):
        self.shuttingdown, self.shouldstop, self.started = False, False, []

    def _clone_node(self, node):
        self.started.append(node)


def batches_for(hosts: int, per_worker: int, dsession: DSession) -> HostBatches:
    plugins = {"dsession": dsession}
    return HostBatches(SimpleNamespace(pluginmanager=SimpleNamespace(getplugin=plugins.get)), hosts, per_worker)


def split_scheduler_for(hosts: list[str], workers: int = 2, batches=None):
    config = SimpleNamespace(option=SimpleNamespace(dist="load", loadscopereorder=True), getvalue=lambda name: [f"{workers}*popen"])
    return by_host_scheduler(config, None, hosts, split=True, batches=batches)


@pytest.mark.parametrize("hosts, workers, per_worker, sizes", [
    (1000, 2, 100, [100] * 10),
    (500, 2, 100, [83, 83, 84, 83, 83, 84]),  # a multiple of the workers: their last batches end together
    (10, 2, 100, [5, 5]),
    (1, 2, 100, [0, 1]),  # a worker with no host
    (7, 3, 2, [1, 1, 1, 1, 1, 2]),
    (5, 2, 1, [1, 1, 1, 1, 1]),  # never an empty batch where every worker has a host
])
def test_batches_are_consecutive_even_and_at_most_the_size_asked(hosts, workers, per_worker, sizes):
    batches = list(plan_batches(hosts, workers, per_worker))
    assert [end - first for first, end in batches] == sizes
    assert [first for first, _ in batches] == [0] + [end for _, end in batches[:-1]] and batches[-1][1] == hosts


class Fleet:
    """xdist's side, simulated: workers started by HostBatches collect their batch; a worker runs a sent test only
    once it knows the next one (or that it is to stop), as xdist's do; a worker that has run everything it was
    sent, and was told to stop, ends, and HostBatches may start a fresh one for the next batch."""

    def __init__(self, hosts: list[str], per_worker: int):
        self.hosts, self.dsession = hosts, DSession()
        self.batches = batches_for(len(hosts), per_worker, self.dsession)
        self.scheduler = split_scheduler_for(hosts, batches=self.batches)
        self.collections: dict[str, list[str]] = {}
        self.live: list[Worker] = []
        self.ran: dict[str, str] = {}
        self.count = 0
        self.most_in_flight = 0

    def start(self, worker=None) -> Worker:
        worker = Worker(f"gw{self.count}")
        self.count += 1
        worker.workerinput = {"workercount": 2}
        self.batches.pytest_configure_node(worker)
        self.live.append(worker)
        return worker

    def collect(self, worker: Worker) -> None:
        self.collections[worker.name] = [c.format(h=h) for h in share_of(self.hosts, worker.workerinput) for c in CHECKS]
        self.scheduler.add_node(worker)
        self.scheduler.add_node_collection(worker, self.collections[worker.name])
        if self.scheduler.collection_is_completed:
            self.scheduler.schedule()

    def step(self, worker: Worker) -> bool:
        """The worker runs one test if it can; True if it did or ended."""
        if worker.sent and (len(worker.sent) > 1 or worker.shutting_down):
            index = worker.sent.pop(0)
            nodeid = self.collections[worker.name][index]
            assert nodeid not in self.ran, "a check was run twice"
            self.ran[nodeid] = worker.name
            self.scheduler.mark_test_complete(worker, index)
            self.most_in_flight = max(self.most_in_flight, len(self.scheduler.assigned_work.get(worker, {})))
            return True
        if not worker.sent and worker.shutting_down:
            assert not self.scheduler.tests_finished or len(self.ran) == len(self.hosts) * len(CHECKS)
            worker.workeroutput = {"exitstatus": 1}
            self.live.remove(worker)
            self.batches.pytest_testnodedown(worker, None)
            assert self.scheduler.remove_node(worker) is None
            for node in self.dsession.started[len(self.started_before):]:
                assert node is worker and node.torn_down
                self.collect(self.start())
            self.started_before = list(self.dsession.started)
            return True
        return False

    def run(self) -> None:
        self.started_before = []
        for worker in [self.start(), self.start()]:
            self.collect(worker)
        while self.live:
            assert any([self.step(w) for w in list(self.live)]), "every worker waits: a deadlock"


def test_workers_judge_a_batch_each_then_fresh_ones_take_the_next_and_every_check_runs_once():
    hosts = [f"host-{i:03d}" for i in range(70)]
    fleet = Fleet(hosts, per_worker=10)
    fleet.run()
    assert sorted(fleet.ran) == sorted(c.format(h=h) for h in hosts for c in CHECKS)
    for host in hosts:  # one worker per host: one collection of its snapshot
        assert len({fleet.ran[c.format(h=host)] for c in CHECKS}) == 1
    assert fleet.count == 8  # 70 hosts in batches of at most 10, a multiple of the 2 workers: 8 workers in all
    assert all(len(c) <= 10 * len(CHECKS) for c in fleet.collections.values())  # none holds more than its batch
    assert fleet.most_in_flight == IN_FLIGHT < 10  # a few hosts at a time, not its batch: never far ahead of the controller
    assert fleet.scheduler.tests_finished and not fleet.scheduler.has_pending
    assert not fleet.scheduler.registered_collections  # a worker that ended is forgotten


def test_a_run_that_is_stopping_starts_no_fresh_worker():
    fleet = Fleet([f"host-{i}" for i in range(12)], per_worker=2)
    fleet.dsession.shuttingdown = True  # Ctrl-C, -x: the workers that end are not replaced
    fleet.run()
    assert fleet.count == 2 and not fleet.dsession.started


def test_a_crashed_workers_replacement_collects_its_batch_and_runs_only_what_was_not_finished():
    hosts = [f"host-{i:03d}" for i in range(40)]
    fleet = Fleet(hosts, per_worker=20)
    fleet.started_before = []
    first, second = fleet.start(), fleet.start()
    for worker in (first, second):
        fleet.collect(worker)
    for _ in range(7):
        fleet.step(first)
    fleet.live.remove(first)  # it dies running its 8th check
    fleet.batches.pytest_testnodedown(first, error="worker died")
    assert fleet.scheduler.remove_node(first) == fleet.collections["gw0"][7]
    replacement = fleet.start()  # xdist starts it
    assert replacement.workerinput[SHARE_KEY] == first.workerinput[SHARE_KEY]  # the crashed one's hosts
    fleet.collect(replacement)
    while fleet.live:
        assert any([fleet.step(w) for w in list(fleet.live)])
    assert sorted(fleet.ran) == sorted(c.format(h=h) for h in hosts for c in CHECKS)
    assert {fleet.ran[n] for n in fleet.collections["gw0"][:7]} == {"gw0"}
    assert {fleet.ran[n] for n in fleet.collections["gw0"][7:]} == {"gw2"}
    assert {fleet.ran[n] for n in fleet.collections["gw1"]} == {"gw1"}
    assert fleet.scheduler.tests_finished and not fleet.scheduler.has_pending


def test_a_worker_with_no_host_in_its_batch_is_told_to_stop():
    scheduler = split_scheduler_for(["only"])
    idle, busy = Worker("gw0"), Worker("gw1")
    for worker, collection in ((idle, []), (busy, [c.format(h="only") for c in CHECKS])):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert idle.shutting_down and not idle.sent and busy.sent == [0, 1, 2]
