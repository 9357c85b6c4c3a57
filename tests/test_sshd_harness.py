"""The loopback sshd harness itself, against a real OpenSSH server."""

import socket
import subprocess
import time

import pytest
import testinfra

try:
    from support.sshd import LoopbackSshd, _descendants
except ImportError:
    from tests.support.sshd import LoopbackSshd, _descendants


def ssh(sshd, *command, **kwargs):
    return subprocess.run(
        ["ssh", "-F", sshd.ssh_config, "127.0.0.1", *command],
        capture_output=True,
        text=True,
        timeout=30,
        **kwargs,
    )


def test_ssh_runs_command_and_logs_it_once(loopback_sshd):
    loopback_sshd.reset_log()
    result = ssh(loopback_sshd, "echo", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"
    assert loopback_sshd.remote_commands() == ["10 echo hello"]


def test_each_session_is_counted(loopback_sshd):
    loopback_sshd.reset_log()
    assert ssh(loopback_sshd, "true").returncode == 0
    assert ssh(loopback_sshd, "exit 3").returncode == 3
    assert loopback_sshd.remote_commands() == ["4 true", "6 exit 3"]


def test_log_line_is_single_line_and_truncated(loopback_sshd):
    loopback_sshd.reset_log()
    command = "printf 'a\\nb\\n'; : " + "x" * 200
    result = ssh(loopback_sshd, command)
    assert result.stdout == "a\nb\n"
    (line,) = loopback_sshd.remote_commands()
    length, head = line.split(" ", 1)
    assert int(length) == len(command.encode())
    assert head == command[:80]


def test_testinfra_backend(loopback_sshd):
    loopback_sshd.reset_log()
    host = testinfra.get_host(loopback_sshd.url, ssh_config=loopback_sshd.ssh_config)
    local = subprocess.run(["uname", "-r"], capture_output=True, text=True, check=True)
    assert host.run("uname -r").stdout == local.stdout
    assert len(loopback_sshd.remote_commands()) == 1


def test_unavailable_reason_is_none_here(loopback_sshd):
    assert LoopbackSshd.unavailable_reason() is None


def test_stop_refuses_connections_and_leaves_no_process():
    reason = LoopbackSshd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    with LoopbackSshd() as sshd:
        # An open session while stopping: its per-connection sshd processes
        # (setsid'ed, so not in sshd's process group) must die too.
        client = subprocess.Popen(
            ["ssh", "-F", sshd.ssh_config, "127.0.0.1", "sleep 60"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not sshd.remote_commands() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sshd.remote_commands() == ["8 sleep 60"]
            main_pid = sshd._proc.pid
            session_pids = _descendants(main_pid)
            assert session_pids

            sshd.stop()

            assert not sshd.running
            assert client.wait(timeout=10) != 0
            for pid in [main_pid, *session_pids]:
                assert not _pid_alive(pid), pid
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", sshd.port), timeout=2).close()
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()


def _pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
