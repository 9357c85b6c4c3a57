"""The -j scheduler: each host's checks on one worker, every check run once, and its bookkeeping bounded."""
from __future__ import annotations

from types import SimpleNamespace

from vfio_certify.xdist_by_host import by_host_scheduler

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
