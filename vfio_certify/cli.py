"""The vfio-certify command.

    vfio-certify [--host URL]... [--snapshot DIR|FILE.tar.gz]... [--device ADDR]...
                 [--output DIR] [-- PYTEST ARGS]
    vfio-certify collect [--host URL] --output DIR|FILE.tar.gz

Exit status: 0 every host certified; 1 a host not certified; 2 usage or configuration
error; 3 a host unreachable (the others are still judged).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .collect import CollectError, Target, collect_snapshot
from .collect.script import render_script
from .devices import DeviceSpecError, parse_devices
from .diff import DiffInputError, diff_runs, load_run
from .e2e.flow import usb_file_problem
from .lab.target import NestedLabRunError, nested_lab_target, wants_nested_lab
from .snapshot import pack_bundle
from .waivers import WaiverError, load_waivers

EXIT_CERTIFIED, EXIT_NOT_CERTIFIED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKS_DIR = REPO_ROOT / "checks"


class UsageError(Exception):
    pass


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ssh-config", metavar="FILE", help="ssh_config file for ssh:// hosts")
    parser.add_argument("--ssh-identity-file", metavar="FILE", help="private key for ssh:// hosts")
    parser.add_argument("--ssh-extra-args", metavar="ARGS", help="extra ssh arguments (replace the built-in keepalive/batch options)")
    parser.add_argument("--ansible-inventory", metavar="FILE", help="inventory for ansible:// hosts")
    parser.add_argument("--sudo", action="store_true", help="run the collection with sudo on the host")
    parser.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="SSH connect timeout in seconds (default 10)")


def _certify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfio-certify",
        description="Certify KVM hosts for device assignment (VT-d / AMD-Vi, VFIO, libvirt hostdev).",
        epilog="Subcommand: 'vfio-certify collect --help'. Exit status: 0 certified, 1 not certified, "
               "2 usage error, 3 a host unreachable.",
    )
    parser.add_argument("--host", action="append", default=[], metavar="URL",
                        help="a host: ssh://root@kvm1, local://, ansible://NAME (repeatable; default: this machine)")
    parser.add_argument("--snapshot", action="append", default=[], metavar="DIR|FILE.tar.gz",
                        help="judge a collected snapshot or customer bundle (repeatable)")
    parser.add_argument("--device", action="append", default=[], metavar="ADDR",
                        help="a device to be assigned: PCI 0000:07:00.1 or 07:00.1; USB 004.002 or 152d:9561 (repeatable)")
    parser.add_argument("--baseline", metavar="DIR|summary.json",
                        help="an earlier run's output folder: report regressions since then (exit 1 on one)")
    parser.add_argument("--waivers", metavar="FILE.toml",
                        help="known exceptions (check id and host globs, reason, owner, expiry): waived failures do not fail a host")
    parser.add_argument("-j", "--jobs", metavar="N",
                        help="hosts judged in parallel by N worker processes (pytest-xdist; 'auto' = one per core)")
    e2e = parser.add_argument_group("end to end (--e2e)")
    e2e.add_argument("--e2e", action="store_true",
                     help="also hot-plug each --device into a running VM, prove it in the guest, detach, restore")
    e2e.add_argument("--domain", default="", help="your running libvirt domain (without it, and with no --host, "
                     "--snapshot or --device, --e2e runs the suite's own nested VT-d lab)")
    e2e.add_argument("--guest", default="", metavar="URL", help="that domain's guest over SSH: ssh://root@vm")
    e2e.add_argument("--guest-ssh-config", metavar="FILE", help="ssh_config for reaching the guest")
    e2e.add_argument("--libvirt-uri", default="", metavar="URI",
                     help="the host's libvirt (default: qemu:///system, or qemu+ssh://HOST/system for ssh:// hosts)")
    e2e.add_argument("--usb-file", default="", metavar="PATH[:SHA256]",
                     help="a file on the USB disk to read back read-only (and its sha256 to compare)")
    e2e.add_argument("--force", action="store_true", help="assign a NIC the host itself uses (never the default)")
    e2e.add_argument("--persistent", action="store_true",
                     help="also attach in the domain's persistent definition (virsh --config; default: live only, "
                          "as virt-xml --update), removed again on detach")
    e2e.add_argument("--journal", metavar="FILE", help="the change journal (default /var/lib/vfio-certify/journal.jsonl)")
    parser.add_argument("--output", default="reports", metavar="DIR",
                        help="where report.html, certification.html, summary.json and junit.xml go (default ./reports)")
    _connection_options(parser)
    return parser


def _collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfio-certify collect",
                                     description="Collect a host's snapshot (to judge later, elsewhere).")
    parser.add_argument("--host", default="local://", metavar="URL", help="the host (default: this machine)")
    parser.add_argument("--output", required=True, metavar="DIR|FILE.tar.gz",
                        help="a new folder, or a bundle file ending in .tar.gz")
    _connection_options(parser)
    return parser


def _target(spec: str, args: argparse.Namespace) -> Target:
    return Target(
        spec=spec if "://" in spec else f"ssh://{spec}",
        ssh_config=args.ssh_config, ssh_identity_file=args.ssh_identity_file,
        ssh_extra_args=args.ssh_extra_args, ansible_inventory=args.ansible_inventory,
        sudo=args.sudo, connect_timeout_s=args.connect_timeout,
    )


def run_collect(argv: list[str]) -> int:
    args = _collect_parser().parse_args(argv)
    output = Path(args.output)
    bundle = output.name.endswith((".tar.gz", ".tgz"))
    if output.exists() and (bundle or any(output.iterdir()) if output.is_dir() else True):
        raise UsageError(f"--output {output}: already exists; name a new folder or file")
    target = _target(args.host, args)
    try:
        if bundle:
            with tempfile.TemporaryDirectory(prefix="vfio-certify-collect-") as tmp:
                collect_snapshot(target, Path(tmp) / "snapshot")
                output.parent.mkdir(parents=True, exist_ok=True)
                pack_bundle(Path(tmp) / "snapshot", output)
        else:
            collect_snapshot(target, output)
    except CollectError as exc:
        shutil.rmtree(output, ignore_errors=True) if output.is_dir() and not bundle else None
        print(f"vfio-certify: {args.host}: unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"vfio-certify: snapshot of {args.host} written to {output}")
    return EXIT_CERTIFIED


def pytest_args(args: argparse.Namespace, extra: list[str]) -> list[str]:
    output = Path(args.output)
    argv = [
        str(CHECKS_DIR), f"--rootdir={REPO_ROOT}", "-c", str(REPO_ROOT / "pyproject.toml"),
        # Checks judge through certify(), never `assert`: no rewriting, and no test-only plugins.
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--assert=plain", "-q", "-rN",
        f"--certify-output={output}", f"--junitxml={output / 'junit.xml'}",
        f"--html={output / 'report.html'}", "--self-contained-html",
        f"--connect-timeout={args.connect_timeout}",
        "-o", "junit_family=xunit2", "-o", "junit_suite_name=vfio-certify",
    ]
    if args.host:
        argv.append("--hosts=" + ",".join(args.host))  # as given: reports and waivers name hosts so
    for name, flag in (("ssh_config", "--ssh-config"), ("ssh_identity_file", "--ssh-identity-file"),
                       ("ssh_extra_args", "--ssh-extra-args"), ("ansible_inventory", "--ansible-inventory")):
        value = getattr(args, name)
        if value:
            argv.append(f"{flag}={value}")
    if args.sudo:
        argv.append("--sudo")
    if args.waivers:
        argv.append(f"--waivers={args.waivers}")
    if args.baseline:
        argv.append(f"--baseline={args.baseline}")
    for path in args.snapshot:
        argv.append(f"--snapshot={path}")
    for device in args.device:
        argv.append(f"--device={device}")
    if args.e2e:
        argv.append("--e2e")
        for name in ("domain", "guest", "guest_ssh_config", "libvirt_uri", "usb_file", "journal", "e2e_lab"):
            value = getattr(args, name, "")
            if value:
                argv.append(f"--{name.replace('_', '-')}={value}")
        for flag in ("force", "persistent"):
            if getattr(args, flag):
                argv.append(f"--{flag}")
    if args.jobs:
        argv += ["-n", str(args.jobs)]  # the plugin's scheduler keeps each host on one worker
    return argv + extra


def _validate(args: argparse.Namespace) -> None:
    parse_devices(args.device)  # raises DeviceSpecError with the one-line message
    if usb_file_problem(args.usb_file):
        raise UsageError(usb_file_problem(args.usb_file))
    if args.e2e and not args.domain and not wants_nested_lab(args):
        raise UsageError("--e2e with --host, --snapshot or --device needs --domain NAME and --guest ssh://root@vm "
                         "(your running VM on that host); --e2e alone runs the suite's own nested lab")
    if args.waivers:
        load_waivers(args.waivers)  # raises WaiverError naming the file and line, before anything runs
    if args.baseline:
        baseline = Path(args.baseline)
        if (baseline if baseline.is_dir() else baseline.parent).resolve() == Path(args.output).resolve():
            raise UsageError(f"--baseline {args.baseline} and --output {args.output} are the same folder: "
                             "this run would replace the baseline; write to a new folder")
        load_run(args.baseline)  # raises DiffInputError
    for flag, values in (("--host", args.host), ("--snapshot", args.snapshot)):
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise UsageError(f"{flag} {twice}: given twice")
    for path in args.snapshot:
        p = Path(path)
        if not p.exists():
            raise UsageError(f"--snapshot {path}: no such folder or file")
        if p.is_file() and not p.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise UsageError(f"--snapshot {path}: expected a snapshot folder or a .tar.gz bundle")
    if not CHECKS_DIR.is_dir():
        raise UsageError(f"the checks folder {CHECKS_DIR} is missing: install vfio-certify from its repository (pip install -e .)")


def exit_status_from_summary(summary_path: Path) -> Optional[int]:
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    verdicts = {h.get("verdict") for h in summary.get("hosts", [])}
    if not verdicts:
        return None
    if "unreachable" in verdicts:
        return EXIT_UNREACHABLE
    if "not-certified" in verdicts:
        return EXIT_NOT_CERTIFIED
    return EXIT_CERTIFIED


def run_certify(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, extra = argv[:index], argv[index + 1:]
    args = _certify_parser().parse_args(argv)
    _validate(args)
    import pytest

    summary = Path(args.output) / "summary.json"
    if summary.exists():
        summary.unlink()  # a stale summary must never decide this run's exit status
    if wants_nested_lab(args):
        with nested_lab_target(args) as lab_args:
            code = pytest.main(pytest_args(lab_args, extra))
    else:
        code = pytest.main(pytest_args(args, extra))
    if code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        return EXIT_USAGE
    if code == pytest.ExitCode.INTERRUPTED:
        return 130
    status = exit_status_from_summary(summary)
    if status is None:
        print("vfio-certify: no check ran (see the pytest output above)", file=sys.stderr)
        return EXIT_USAGE
    if args.baseline and status == EXIT_CERTIFIED and _regressed(Path(args.output) / "diff.json"):
        return EXIT_NOT_CERTIFIED
    return status


def _regressed(diff_path: Path) -> bool:
    try:
        return bool(json.loads(diff_path.read_text(encoding="utf-8")).get("regression"))
    except (OSError, ValueError):
        return True  # a baseline was asked for and no diff came out: do not report success


def run_diff(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vfio-certify diff",
                                     description="What changed between two runs (output folders or summary.json files). "
                                                 "Exit 1 on a regression.")
    parser.add_argument("old", help="the earlier run")
    parser.add_argument("new", help="the later run")
    parser.add_argument("--json", action="store_true", help="print the diff as JSON")
    args = parser.parse_args(argv)
    diff = diff_runs(load_run(args.old), load_run(args.new))
    print(json.dumps(diff.to_dict(), indent=2) if args.json else diff.text())
    return EXIT_NOT_CERTIFIED if diff.regression else EXIT_CERTIFIED


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["collect"]:
            return run_collect(argv[1:])
        if argv[:1] == ["diff"]:
            return run_diff(argv[1:])
        if argv[:1] == ["script"]:
            argparse.ArgumentParser(prog="vfio-certify script",
                                    description="Print the collection script (POSIX sh). 'sh collect.sh FILE' "
                                                "writes a bundle to FILE; without FILE it prints it as base64.").parse_args(argv[1:])
            print(render_script(), end="")
            return EXIT_CERTIFIED
        return run_certify(argv)
    except (UsageError, DeviceSpecError, WaiverError, DiffInputError, NestedLabRunError) as exc:
        print(f"vfio-certify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vfio-certify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
