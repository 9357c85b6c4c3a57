"""Collections started ahead (collect/runner.py start_early, start_ahead): this machine's while pytest and the
checks are imported, the next hosts' while a process judges one; the run takes each over, and one that
nothing takes is stopped."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from vfio_certify import cli
from vfio_certify.collect import Target, collect_snapshot
from vfio_certify.collect import runner

# The script records the session it runs over ($1 of the remote command, "$SSH_CONNECTION" of this side's
# shell): which run's environment a snapshot saw tells which script wrote it.
AHEAD = "192.0.2.1 50000 192.0.2.2 22"
LATER = "192.0.2.9 50009 192.0.2.2 22"


@pytest.fixture
def session_env(monkeypatch):
    monkeypatch.setenv("SSH_CONNECTION", AHEAD)
    yield monkeypatch
    runner.discard_early()


def recorded_session(snap) -> str:
    return snap.command("printenv SSH_CONNECTION").stdout.strip()


def test_the_collection_started_ahead_is_the_one_judged(session_env, tmp_path):
    runner.start_early(Target("local://"))
    session_env.setenv("SSH_CONNECTION", LATER)
    snap = collect_snapshot(Target("local://"), tmp_path / "s")
    assert recorded_session(snap) == AHEAD
    assert runner._EARLY == []  # taken: the next collection runs its own script
    assert recorded_session(collect_snapshot(Target("local://"), tmp_path / "t")) == LATER


def test_another_target_or_bound_does_not_take_it_and_an_untaken_one_is_stopped(session_env, tmp_path):
    runner.start_early(Target("local://"))
    [running] = runner._EARLY
    session_env.setenv("SSH_CONNECTION", LATER)
    snap = collect_snapshot(Target("local://", collect_timeout_s=60), tmp_path / "s")
    assert recorded_session(snap) == LATER and runner._EARLY == [running]
    runner.discard_early()
    assert runner._EARLY == [] and running.proc.returncode is not None


def test_it_runs_behind_the_judging_side_and_a_command_refused_meanwhile_stops_it(session_env, tmp_path):
    """The command starts it before it validates its options (it only reads the host), at a lower priority than
    its own: a run refused for a bad option stops it before saying why."""
    started = []

    def start_early(target):
        runner.start_early(target)
        started.extend(runner._EARLY)
        pid = runner._EARLY[0].proc.pid
        started.append(os.getpriority(os.PRIO_PGRP, pid) - os.getpriority(os.PRIO_PROCESS, 0))

    session_env.setattr(cli, "start_early", start_early)
    assert cli.main(["--device", "not-a-device", "--output", str(tmp_path / "out")]) == cli.EXIT_USAGE
    [running, niceness] = started
    assert niceness == runner.EARLY_NICENESS
    assert runner._EARLY == [] and running.proc.returncode is not None


def test_only_this_machine_is_collected_ahead():
    with pytest.raises(ValueError):
        runner.start_early(Target("ssh://root@kvm1"))


@pytest.mark.parametrize("argv, ahead", [
    ([], "local"),
    (["--host", "local://"], "local"),
    (["--host", "local://", "--host", "root@kvm1", "-j", "2"], None),  # each worker collects, in its own process
    (["--host", "local://", "-j", "2"], "local"),  # one host: no worker, judged in this process
    (["--snapshot", "fixtures/hosts/rocky9-after-intel-iommu"], None),
    (["--host", "root@kvm1"], "ssh"),
    (["--host", "root@kvm1", "--host", "root@kvm2"], None),  # the session collects one while it judges another
])
def test_the_command_collects_ahead_only_the_one_host_judged_in_its_own_process(argv, ahead):
    target = cli.target_judged_alone(cli._certify_parser().parse_args(argv))
    assert (target.source if target else None) == ahead


def test_a_remote_host_is_collected_ahead_once_the_options_are_valid(tmp_path, loopback_sshd):
    """Its collection starts before pytest is imported, and the session takes it over: one login, one command."""
    values = cli._certify_parser().parse_args(["--host", loopback_sshd.url, "--ssh-config", str(loopback_sshd.ssh_config)])
    target = cli.target_judged_alone(values)
    loopback_sshd.reset_log()
    cli.collect_ahead(target, validated=False)
    assert runner._EARLY == []  # no login for a run that may yet be refused
    cli.collect_ahead(target, validated=True)
    [running] = runner._EARLY
    snap = collect_snapshot(target, tmp_path / "s")
    assert runner._EARLY == [] and running.proc.returncode == 0 and (tmp_path / "s" / "meta.json").is_file()
    assert snap.command("uname -r").ok and len(loopback_sshd.remote_commands()) == 1


def test_a_process_judging_many_hosts_collects_the_next_ones_while_it_judges_one_each_once(tmp_path):
    """The session starts the next COLLECT_AHEAD live hosts' collections when it collects one; each host still
    sees one SSH login and one remote command, and a host down is reported as when collected in turn."""
    from support.fleet import FleetHost, LoopbackFleet

    from vfio_certify import session as session_module
    from vfio_certify.session import CertifySession
    from vfio_certify.targets import targets_from

    reason = LoopbackFleet.unavailable_reason()
    if reason:
        pytest.skip(reason)
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "hosts" / "rocky9-after-intel-iommu"
    hosts = [FleetHost(f"kvm-{i}", fixture) for i in range(5)] + [FleetHost.down("kvm-down")]
    with LoopbackFleet(hosts) as fleet:
        values = SimpleNamespace(ssh_config=fleet.ssh_config, connect_timeout=3, collect_timeout=60)
        targets = targets_from([f"ssh://{name}" for name in fleet.names], [], values)
        session = CertifySession(targets=targets, devices=[], output=None)
        try:
            session.judge_here(targets)
            first = session.collected(targets[0])
            ahead = [running.target.spec for running in runner._EARLY]
            assert ahead == [t.spec.spec for t in targets[1:1 + session_module.COLLECT_AHEAD]]
            results = [first] + [session.collected(t) for t in targets[1:]]
        finally:
            session.close()
        assert runner._EARLY == []
        assert [r.facts is not None for r in results] == [True] * 5 + [False]
        assert "refused" in results[-1].error.lower(), results[-1].error
        for name in fleet.names[:5]:
            assert fleet.handshakes(name) == 1 and len(fleet.remote_commands(name)) == 1, name


def test_collections_started_ahead_that_no_host_took_are_stopped_when_the_session_closes(session_env):
    from vfio_certify.session import CertifySession
    from vfio_certify.targets import CertifyTarget

    targets = [CertifyTarget(f"local-{i}", "local", spec=Target("local://", collect_timeout_s=60 + i))
               for i in range(3)]
    session = CertifySession(targets=targets, devices=[], output=None)
    session.judge_here(targets)
    session._start_ahead_of(targets[0])
    started = list(runner._EARLY)
    assert [r.target for r in started] == [t.spec for t in targets[1:]]
    session.close()
    assert runner._EARLY == [] and all(r.proc.returncode is not None for r in started)
