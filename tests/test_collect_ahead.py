"""This machine's collection started ahead (collect/runner.py start_early): while pytest and the checks are
imported, the script already runs; the run takes it over, and one that nothing takes is stopped."""
from __future__ import annotations

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


def test_only_this_machine_is_collected_ahead():
    with pytest.raises(ValueError):
        runner.start_early(Target("ssh://root@kvm1"))


@pytest.mark.parametrize("argv, ahead", [
    ([], True),
    (["--host", "local://"], True),
    (["--host", "local://", "-j", "2"], False),  # the worker collects, in its own process
    (["--snapshot", "fixtures/hosts/rocky9-after-intel-iommu"], False),
    (["--host", "root@kvm1"], False),
])
def test_the_command_collects_ahead_only_this_machine_judged_in_its_own_process(session_env, argv, ahead):
    cli.collect_ahead(cli._certify_parser().parse_args(argv))
    assert len(runner._EARLY) == (1 if ahead else 0)
