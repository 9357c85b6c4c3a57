"""Ansible: ansible:// hosts through testinfra, and the shipped playbook that collects bundles."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(not (BIN / "ansible-playbook").exists(),
                                reason="needs ansible-core in the venv (scripts/setup.sh installs the [test] extras)")


def inventory(tmp_path, hosts):
    lines = [f"{name} ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user=root "
             f"ansible_ssh_private_key_file={sshd.identity_file} "
             "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
             for name, sshd in hosts.items()]
    path = tmp_path / "inventory.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def certify(*args):
    return subprocess.run([str(BIN / "vfio-certify"), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=300, env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False"})


def outcomes(output):
    [host] = json.loads((output / "summary.json").read_text())["hosts"]
    return host, {c["id"]: c["outcome"] for c in host["checks"]}


def test_ansible_host_is_collected_in_one_remote_command(tmp_path, loopback_sshd):
    inv = inventory(tmp_path, {"kvm-a": loopback_sshd})
    loopback_sshd.reset_log()
    certify("--host", "ansible://kvm-a", "--ansible-inventory", inv, "--output", tmp_path / "a")
    host, via_ansible = outcomes(tmp_path / "a")
    assert host["source"] == "ansible" and host["verdict"] != "unreachable"
    assert len(loopback_sshd.remote_commands()) == 1
    certify("--output", tmp_path / "local")
    assert via_ansible == outcomes(tmp_path / "local")[1]


def playbook(inv, script, bundle_dir):
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(REPO / "ansible" / "collect-bundles.yml"),
                           "-e", f"collect_script={script}", "-e", f"bundle_dir={bundle_dir}"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False", "PATH": f"{BIN}:{os.environ['PATH']}"})


def test_playbook_collects_bundles_that_vfio_certify_judges(tmp_path, loopback_sshd):
    inv = inventory(tmp_path, {"kvm-a": loopback_sshd, "kvm-b": loopback_sshd})
    script = tmp_path / "collect.sh"
    script.write_text(certify("script").stdout)
    loopback_sshd.reset_log()
    proc = playbook(inv, script, tmp_path / "bundles")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(loopback_sshd.remote_commands()) == 2  # one per inventory host
    bundles = sorted((tmp_path / "bundles").glob("*.tar.gz"))
    assert [b.name for b in bundles] == ["kvm-a.tar.gz", "kvm-b.tar.gz"]
    judged = certify(*[arg for b in bundles for arg in ("--snapshot", b)], "--output", tmp_path / "out")
    hosts = json.loads((tmp_path / "out" / "summary.json").read_text())["hosts"]
    assert [h["host"] for h in hosts] == [str(b) for b in bundles] and judged.returncode in (0, 1)
    certify("--output", tmp_path / "local")
    local = outcomes(tmp_path / "local")[1]
    assert all({c["id"]: c["outcome"] for c in h["checks"]} == local for h in hosts)

    # The next night kvm-b is down: its old bundle is gone, not judged again, and --baseline names it.
    down = SimpleNamespace(port=9, identity_file=loopback_sshd.identity_file)
    proc = playbook(inventory(tmp_path, {"kvm-a": loopback_sshd, "kvm-b": down}), script, tmp_path / "bundles")
    assert proc.returncode != 0 and "kvm-b" in proc.stdout
    assert sorted(b.name for b in (tmp_path / "bundles").iterdir()) == ["kvm-a.tar.gz"]
    tonight = [arg for b in sorted((tmp_path / "bundles").glob("*.tar.gz")) for arg in ("--snapshot", b)]
    judged = certify(*tonight, "--output", tmp_path / "night-2", "--baseline", tmp_path / "out")
    diff = json.loads((tmp_path / "night-2" / "diff.json").read_text())
    assert diff["regression"] and diff["removed_hosts"] == [str(bundles[1])] and judged.returncode == 1
    assert f"{bundles[1]}: REGRESSION: no longer in the run" in judged.stdout


def test_an_inventory_group_expands_to_its_hosts(tmp_path, loopback_sshd):
    inv = inventory(tmp_path, {"kvm-a": loopback_sshd, "kvm-b": loopback_sshd})
    loopback_sshd.reset_log()
    certify("--host", "ansible://all", "--ansible-inventory", inv, "--output", tmp_path / "o")
    hosts = json.loads((tmp_path / "o" / "summary.json").read_text())["hosts"]
    assert sorted(h["host"] for h in hosts) == ["ansible://kvm-a", "ansible://kvm-b"]
    assert len(loopback_sshd.remote_commands()) == 2
