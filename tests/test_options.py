"""Options are declared once (vfio_certify/options.py) and validated once, for the command and for pytest."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vfio_certify import options
from vfio_certify.cli import REPO_ROOT, _certify_parser, pytest_args

DUMPER = """
import json, os, pytest

@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):  # parsed, before any configure (vfio-certify's refuses these made-up paths)
    with open(os.environ["OPTIONS_DUMP"], "w") as out:
        json.dump({k: v for k, v in vars(config.option).items() if isinstance(v, (str, int, list, type(None)))}, out)
"""


def as_pytest_sees_it(argv: list[str], tmp_path: Path) -> argparse.Namespace:
    """The options a real pytest run parses from argv (with testinfra's and this project's plugins)."""
    (tmp_path / "options_dumper.py").write_text(DUMPER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OPTIONS_DUMP": str(tmp_path / "dump.json")}
    subprocess.run([sys.executable, "-m", "pytest", *argv, "-p", "options_dumper", "--collect-only"],
                   cwd=REPO_ROOT, env=env, capture_output=True, timeout=120)
    return argparse.Namespace(**json.loads((tmp_path / "dump.json").read_text()))


def pytest_help() -> str:
    return subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120).stdout


def test_every_option_pytest_takes_reaches_it_with_the_value_the_command_was_given(tmp_path):
    argv = ["--snapshot", "a", "--snapshot", "b", "--device", "07:00.1", "--device", "004.002",
            "--baseline", "old", "--waivers", "w.toml", "--e2e", "--domain", "vm", "--guest", "ssh://root@vm",
            "--guest-ssh-config", "g.conf", "--libvirt-uri", "test:///default", "--usb-file", "f:00",
            "--force", "--persistent", "--journal", "j.jsonl", "--ssh-config", "s.conf",
            "--ssh-identity-file", "id", "--ssh-extra-args", "-o X=1", "--ansible-inventory", "inv",
            "--sudo", "--connect-timeout", "3", "--collect-timeout", "7", "--output", str(tmp_path)]
    args = _certify_parser().parse_args(argv)
    forwarded = as_pytest_sees_it(pytest_args(args, []), tmp_path)
    compared = [o for o in options.OPTIONS if o.cli and (o.pytest or o.declared_by_testinfra)]
    assert len(compared) >= 20  # the 14 shared options, --collect-timeout and the 5 of testinfra
    for option in compared:
        assert getattr(forwarded, option.dest) == getattr(args, option.dest), option.flags
    assert forwarded.certify_output == str(tmp_path)


def test_defaults_are_not_forwarded_and_mean_the_same_on_both_sides(tmp_path):
    args = _certify_parser().parse_args(["--output", str(tmp_path)])
    forwarded = as_pytest_sees_it(pytest_args(args, []), tmp_path)
    for option in options.OPTIONS:
        if option.cli and option.pytest:
            assert getattr(forwarded, option.dest) == getattr(args, option.dest), option.flags
    assert options.forward_to_pytest(args) == []


def test_each_flag_is_declared_once():
    flags = [f for o in options.OPTIONS for f in o.flags]
    assert len(flags) == len(set(flags))
    help_of = {f: o.help for o in options.OPTIONS for f in o.flags}
    command_help = _certify_parser().format_help()
    pytest_help_text = pytest_help()
    for flag in ("--device", "--connect-timeout"):  # their help texts once disagreed between the two
        first_words = " ".join(help_of[flag].split()[:4])
        assert first_words in " ".join(command_help.split()) and first_words in " ".join(pytest_help_text.split())


@pytest.mark.parametrize("value, problem", [("0", "at least 1 second"), ("ten", "not a whole number of seconds")])
def test_seconds_are_whole_and_positive(value, problem):
    with pytest.raises(SystemExit):
        _certify_parser().parse_args(["--connect-timeout", value])
    with pytest.raises(argparse.ArgumentTypeError, match=problem):
        options.seconds(value)


def values(**given):
    base = {o.dest: o.default() for o in options.OPTIONS}
    return argparse.Namespace(**{**base, **given})


@pytest.mark.parametrize("given, hosts, message", [
    ({"device": ["zz:99"]}, [], "--device 'zz:99': not a PCI address"),
    ({"snapshot": ["/nonexistent/snap"]}, [], "--snapshot /nonexistent/snap: no such folder or file"),
    ({}, ["kvm1", "kvm1"], "--host kvm1: given twice"),
    ({"e2e": True, "domain": "vm"}, ["a", "b"], "--e2e takes one host: the one the domain runs on"),
    ({"e2e": True}, ["a"], "needs --domain NAME and --guest"),
    ({"usb_file": "../etc/shadow"}, [], "--usb-file"),
])
def test_one_validation_gives_one_line_errors(given, hosts, message):
    with pytest.raises(options.OptionError) as raised:
        options.validate(values(**given), hosts)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_validation_parses_devices_once_for_its_caller():
    valid = options.validate(values(device=["07:00.1", "004.002"]), [])
    assert [d.key for d in valid.devices] == ["0000:07:00.1", "004.002"]
    assert valid.waivers == [] and valid.baseline is None


def test_the_nested_lab_fills_in_the_e2e_options_itself():
    assert options.validate(values(e2e=True), [], nested_lab=True).devices == []
