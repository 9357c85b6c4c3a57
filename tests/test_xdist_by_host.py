"""The -j scheduler: each host's checks on one worker, every check run once, and its bookkeeping bounded."""
from __future__ import annotations

from types import SimpleNamespace

from vfio_certify.xdist_by_host import SHARE_KEY, HostShares, by_host_scheduler, share_of

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


def split_scheduler_for(hosts: list[str], workers: int = 2):
    config = SimpleNamespace(option=SimpleNamespace(dist="load", loadscopereorder=True), getvalue=lambda name: [f"{workers}*popen"])
    return by_host_scheduler(config, None, hosts, split=True)


def run_to_the_end(scheduler, workers, collections, ran, stop_after=None):
    """Each worker completes what it was sent, in order; `stop_after` checks later the first worker crashes."""
    done = 0
    while any(w.sent for w in workers):
        for worker in workers:
            if worker.sent:
                if stop_after is not None and worker is workers[0] and done == stop_after:
                    return worker
                index = worker.sent.pop(0)
                nodeid = collections[worker.name][index]
                assert nodeid not in ran, "a check was run twice"
                ran[nodeid] = worker.name
                scheduler.mark_test_complete(worker, index)
                done += worker is workers[0]
    return None


def test_split_each_worker_runs_the_hosts_it_collected_and_a_crashed_workers_replacement_finishes_its_share():
    hosts = [f"host-{i:03d}" for i in range(40)]
    shares = HostShares()
    workers = [Worker("gw0"), Worker("gw1")]
    collections = {}
    for worker in workers:  # each worker is told its share, and collects only those hosts
        worker.workerinput = {"workercount": 2}
        shares.pytest_configure_node(worker)
        mine = share_of(hosts, worker.workerinput)
        collections[worker.name] = [c.format(h=h) for h in mine for c in CHECKS]
    assert sorted(share_of(hosts, workers[0].workerinput) + share_of(hosts, workers[1].workerinput)) == hosts
    scheduler = split_scheduler_for(hosts)
    for worker in workers:
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collections[worker.name])
    scheduler.schedule()
    assert all(w.shutting_down for w in workers)  # everything was sent: each stops when its share is done
    ran: dict[str, str] = {}
    crashed = run_to_the_end(scheduler, workers, collections, ran, stop_after=7)
    assert crashed is workers[0]
    shares.pytest_testnodedown(crashed, error="worker died")
    crash_item = scheduler.remove_node(crashed)
    assert crash_item == collections["gw0"][7]
    replacement = Worker("gw2")
    replacement.workerinput = {"workercount": 2}
    shares.pytest_configure_node(replacement)
    assert replacement.workerinput[SHARE_KEY] == workers[0].workerinput[SHARE_KEY]  # the crashed one's hosts
    collections["gw2"] = collections["gw0"]
    scheduler.add_node(replacement)
    scheduler.add_node_collection(replacement, collections["gw2"])
    scheduler.schedule()
    run_to_the_end(scheduler, [workers[1], replacement], collections, ran)
    every = [n for c in (collections["gw0"], collections["gw1"]) for n in c]
    assert sorted(ran) == sorted(every)
    assert {ran[n] for n in collections["gw0"][:7]} == {"gw0"} and {ran[n] for n in collections["gw0"][7:]} == {"gw2"}
    assert {ran[n] for n in collections["gw1"]} == {"gw1"}
    assert scheduler.tests_finished and not scheduler.has_pending


def test_a_worker_with_no_host_in_its_share_is_told_to_stop():
    scheduler = split_scheduler_for(["only"])
    idle, busy = Worker("gw0"), Worker("gw1")
    for worker, collection in ((idle, []), (busy, [c.format(h="only") for c in CHECKS])):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert idle.shutting_down and not idle.sent and busy.sent == [0, 1, 2]
