"""The vfio-certify command.

    vfio-certify [--host URL]... [--snapshot DIR|FILE.tar.gz]... [--device ADDR]...
                 [--output DIR] [-- PYTEST ARGS]
    vfio-certify collect [--host URL] --output DIR|FILE.tar.gz

Exit status (this run's own verdict): 0 every host certified; 1 a host not certified or incomplete; 2 usage
or configuration error; 3 a host unreachable (the others are still judged). --output belongs to
one run (output_folder.py): a new folder, or an earlier run's, replaced whole.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Optional

# Only what starts this machine's collection (collect_ahead) is imported before it starts: the checks, the
# facts and pytest are imported while it runs.
from . import options, output_folder
from .collect import CollectError, collect_snapshot
from .collect.runner import Target, discard_early, start_ahead, start_early
from .collect.script import render_script
from .options import OptionError
from .snapshot import pack_bundle
from .targets import target_for, targets_from

EXIT_CERTIFIED, EXIT_NOT_CERTIFIED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKS_DIR = REPO_ROOT / "checks"


UsageError = OptionError  # a usage error of the command itself: one line, exit 2


def _certify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfio-certify",
        description="Certify KVM hosts for device assignment (VT-d / AMD-Vi, VFIO, libvirt hostdev).",
        epilog="Subcommand: 'vfio-certify collect --help'. Exit status: 0 certified, 1 not certified or incomplete, "
               "2 usage error, 3 a host unreachable.",
    )
    options.add_to_argparse(parser)
    return parser


def _collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vfio-certify collect",
                                     description="Collect a host's snapshot (to judge later, elsewhere).")
    # Not the certify command's --host and --output: one host, and where its snapshot goes.
    parser.add_argument("--host", default="local://", metavar="URL", help="the host (default: this machine)")
    parser.add_argument("--output", required=True, metavar="DIR|FILE.tar.gz",
                        help="a new folder, or a bundle file ending in .tar.gz")
    options.add_to_argparse(parser, groups=[options.CONNECTION])
    return parser


def run_collect(argv: list[str]) -> int:
    args = _collect_parser().parse_args(argv)
    output = Path(args.output)
    bundle = output.name.endswith((".tar.gz", ".tgz"))
    if output.exists() and (bundle or any(output.iterdir()) if output.is_dir() else True):
        raise UsageError(f"--output {output}: already exists; name a new folder or file")
    target = target_for(args.host, args)
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


# The plugins a certification uses, and only those: pytest would import every installed one (its entry
# points: hypothesis, ...), and its own that no check uses (doctests, unittest classes, temporary folders,
# whose start removes old ones, the search for unraisable exceptions: two full garbage collections at the
# end of every run, subtests, which keeps an entry for every test's report to the end, and those that wrap
# every test in work no check needs: log capture, thread-exception hooks, the debugger, monkeypatch and recwarn
# fixtures). Some only when the run uses them: xdist for -j or `-- -n 2`, pytest's junitxml for
# `-- --junitxml=FILE` (the command writes junit.xml itself, report/junit.py). Another plugin:
# `vfio-certify ... -- -p NAME`. Named by their entry points, they are registered under the names they have
# when pytest loads them itself. Not pytest-html: the command writes report.html itself from the results
# (report/report_table.py); `-- -p html --html=FILE` still gets pytest-html's page.
PLUGINS = ["pytest11.testinfra"]
UNUSED_BUILTIN_PLUGINS = ["cacheprovider", "doctest", "unittest", "pastebin", "legacypath", "tmpdir",
                          "unraisableexception", "subtests", "logging", "threadexception", "debugging", "stepwise",
                          "setuponly", "setupplan", "monkeypatch", "recwarn", "python_path"]
XDIST_FLAGS = ("-n", "--numprocesses", "--maxprocesses", "--max-worker-restart", "--dist", "--tx")
JUNITXML_FLAGS = ("--junitxml", "--junit-xml", "--junitprefix", "--junit-prefix")


def _given(flags: tuple[str, ...], extra: list[str]) -> bool:
    """One of `flags` among pytest's arguments (`--flag`, `--flag=V`, or `-n2` for a one-letter flag)."""
    return any(arg.split("=", 1)[0] in flags or (arg[:2] in flags and len(arg) > 2 and arg[1] != "-")
               for arg in extra)


def plugin_args(extra: list[str] = (), jobs: bool = False) -> list[str]:
    argv = ["--disable-plugin-autoload"]
    for name in PLUGINS + (["xdist"] if jobs or _given(XDIST_FLAGS, extra) else []):
        argv += ["-p", name]
    unused = UNUSED_BUILTIN_PLUGINS + ([] if _given(JUNITXML_FLAGS, extra) else ["junitxml"])
    for name in unused:
        argv += ["-p", f"no:{name}"]
    return argv


def pytest_args(args: argparse.Namespace, extra: list[str]) -> list[str]:
    output, count = Path(args.output), workers(args)
    argv = [
        # No config file: the project's own (pyproject.toml, its tests' settings) is not the checks', and reading it
        # cost 4 ms of every run (tomllib). The plugin registers its marker itself.
        str(CHECKS_DIR), f"--rootdir={REPO_ROOT}", "-c", os.devnull,
        *plugin_args(extra, jobs=count != 0),
        # Checks judge through certify(), never `assert`: no rewriting.
        "--assert=plain", "-q", "-rN",
        # No failure tracebacks: a check's failure is its message, in the verdict and the reports; pytest's
        # summary of failures repeats it and scans every report for each failure (minutes for 1,000 hosts).
        "--tb=no",
        # junit.xml and report.html are written by the plugin from the results, host by host (report/outputs.py);
        # pytest's junitxml and pytest-html would keep every test's report to the end of the run.
        f"--certify-output={output}",
    ]
    if _given(JUNITXML_FLAGS, extra):  # pytest's own junit.xml, alike
        argv += ["-o", "junit_family=xunit2", "-o", "junit_suite_name=vfio-certify"]
    if args.host:
        argv.append("--hosts=" + ",".join(args.host))  # as given: reports and waivers name hosts so
    argv += options.forward_to_pytest(args)
    if count:  # the plugin's scheduler keeps each host on one worker
        argv += ["-n", str(args.jobs) if count < 0 else str(count)]
    return argv + extra


def workers(args: argparse.Namespace) -> int:
    """-j's worker processes: N, or one per core for 'auto', but no more than the hosts to judge (a worker with
    no host costs a Python start and pytest's import, 0.3 s here); none for one host, judged in this process
    (0 also without -j). -1: -j as given, for an ansible group (its hosts are known once its inventory is read)
    or another xdist value."""
    if not args.jobs:
        return 0
    if args.jobs == "auto":
        given = os.cpu_count() or 1
    elif args.jobs.isdigit():
        given = int(args.jobs)
    else:
        return -1  # as given
    if _names_an_ansible_group(args):
        return -1
    hosts = len(args.host or []) + len(args.snapshot or []) or 1  # neither: this machine
    return 0 if hosts == 1 else min(given, hosts)


def _names_an_ansible_group(args: argparse.Namespace) -> bool:
    """An ansible:// host: its hosts are known once its inventory is read (targets.expand_ansible)."""
    return any(h.startswith("ansible://") for h in args.host or [])


def wants_nested_lab(args: argparse.Namespace) -> bool:
    """--e2e naming no domain, host, snapshot or device: nothing of the user's to assign (the nested lab runs)."""
    return bool(args.e2e and not args.domain and not args.host and not args.snapshot and not args.device)


def target_judged_alone(args: argparse.Namespace) -> Optional[Target]:
    """The one live host of a run judged in this process (no -j, no snapshot, no nested lab, no ansible group to
    expand), as the plugin's session will make it: its collection can start before pytest is imported."""
    if workers(args) or args.snapshot or wants_nested_lab(args) or _names_an_ansible_group(args):
        return None
    targets = targets_from(args.host or [], [], args)
    return targets[0].spec if len(targets) == 1 else None


def collect_ahead(target: Optional[Target], validated: bool) -> None:
    """Start collecting the run's one live host while pytest and the checks are imported; the session takes it
    over (collect_snapshot of the same target). This machine at once: its script only reads, and a run refused
    for a bad option stops it. A remote host once the options are valid: no login for a run that is refused."""
    if target is None:
        return
    if target.source == "local" and not validated:
        start_early(target)
    elif target.source != "local" and validated:
        start_ahead(target)  # ssh://: one ssh process, its answer read by a thread


def _validate(args: argparse.Namespace) -> None:
    options.validate(args, args.host, nested_lab=wants_nested_lab(args))
    output_folder.check_output(Path(args.output), output_folder.inputs_of(args))
    output_folder.refuse_if_busy(Path(args.output))
    if not CHECKS_DIR.is_dir():
        raise UsageError(f"the checks folder {CHECKS_DIR} is missing: install vfio-certify from its repository (pip install -e .)")


def exit_status_of(verdicts: set[str]) -> Optional[int]:
    if not verdicts:
        return None
    if "unreachable" in verdicts:
        return EXIT_UNREACHABLE
    if verdicts & {"not-certified", "incomplete"}:
        return EXIT_NOT_CERTIFIED
    return EXIT_CERTIFIED


class _ThisRun:
    """What this pytest run judged, kept when it ends: the exit status is this run's, never read back from a file."""

    def __init__(self) -> None:
        self.verdicts: set[str] = set()
        self.regression: Optional[bool] = None

    def pytest_unconfigure(self, config) -> None:
        from .plugin import RUN_KEY, SESSION_KEY

        run = config.stash.get(RUN_KEY, None)
        session = config.stash.get(SESSION_KEY, None)
        self.verdicts = {h.verdict.value for h in run.hosts} if run is not None else set()
        if session is not None and session.baseline is not None:
            self.regression = session.diff is None or session.diff.regression  # no diff: never report success


def run_certify(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, extra = argv[:index], argv[index + 1:]
    args = _certify_parser().parse_args(argv)
    alone = target_judged_alone(args)
    collect_ahead(alone, validated=False)
    try:
        _validate(args)
        collect_ahead(alone, validated=True)
        return _run_pytest(args, extra)
    finally:
        discard_early()


def _run_pytest(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    this_run = _ThisRun()
    if wants_nested_lab(args):
        from .lab.target import NestedLabRunError, nested_lab_target  # the lab only for it: a static run never imports it
        try:
            with nested_lab_target(args) as lab_args:
                code = pytest.main(pytest_args(lab_args, extra), plugins=[this_run])
        except NestedLabRunError as exc:
            print(f"vfio-certify: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        code = pytest.main(pytest_args(args, extra), plugins=[this_run])
    if code in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        return EXIT_USAGE
    if code == pytest.ExitCode.INTERRUPTED:
        return 130
    status = exit_status_of(this_run.verdicts)
    if status is None:
        print("vfio-certify: no check ran (see the pytest output above)", file=sys.stderr)
        return EXIT_USAGE
    if status == EXIT_CERTIFIED and this_run.regression:
        return EXIT_NOT_CERTIFIED
    return status


def run_diff(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vfio-certify diff",
                                     description="What changed between two runs (output folders or summary.json files). "
                                                 "Exit 1 on a regression.")
    parser.add_argument("old", help="the earlier run")
    parser.add_argument("new", help="the later run")
    parser.add_argument("--json", action="store_true", help="print the diff as JSON")
    args = parser.parse_args(argv)
    from .diff import DiffInputError, diff_runs, load_run

    try:
        diff = diff_runs(load_run(args.old), load_run(args.new))
    except DiffInputError as exc:
        raise OptionError(str(exc)) from None
    print(json.dumps(diff.to_dict(), indent=2) if args.json else diff.text())
    return EXIT_NOT_CERTIFIED if diff.regression else EXIT_CERTIFIED


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stop in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: temporary folders (an unpacking bundle) are removed
        signal.signal(stop, signal.default_int_handler)
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
    except OptionError as exc:
        print(f"vfio-certify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vfio-certify: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The installed command: main(), then exit. Its objects are frozen first (gc.freeze): the interpreter's
    last full garbage collections at exit would scan every object a run made (20-50 ms of a local
    certification on a 2-core machine); the process ends, its memory goes back whole."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
