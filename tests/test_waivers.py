"""Waivers: a waived failure does not fail the host; expired ones stop waiving; bad files fail early."""
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vfio_certify.model import CheckResult, Outcome, Severity
from vfio_certify.waivers import WaiverError, apply_waivers, parse_waivers

REPO = Path(__file__).resolve().parent.parent
GOOD = """
# lab hosts: the GPU and its audio function are assigned together
[[waiver]]
check = "iommu.group_isolated[*]"
host = "kvm-lab-*"
reason = "GPU and HDMI audio go to the same VM"
owner = "virt-team@example.com"
expires = 2099-12-31

[[waiver]]
check = "kernel.config[CONFIG_VFIO]"
reason = "custom kernel being rebuilt"
owner = "kernel@example.com"
expires = "2020-01-01"
"""


def failed(check_id="iommu.group_isolated[0000:04:00.0]"):
    return CheckResult(check_id, Outcome.FAILED, Severity.REQUIRED, "group 5 is not viable", ["group 5: ..."], "fix")


def test_a_live_waiver_waives_with_its_reason_and_owner():
    waivers = parse_waivers(GOOD)
    result = apply_waivers(failed(), "kvm-lab-3", waivers, today=dt.date(2026, 11, 25))
    assert result.outcome is Outcome.WAIVED and not result.blocks_certification
    assert result.waiver["owner"] == "virt-team@example.com" and result.waiver["was"] == "failed"
    assert "GPU and HDMI audio" in result.message


def test_host_glob_and_literal_brackets():
    waivers = parse_waivers(GOOD)
    assert apply_waivers(failed(), "kvm-prod-1", waivers).outcome is Outcome.FAILED
    # '[CONFIG_VFIO]' is literal, not a character class matching 'kernel.configC'
    assert not waivers[1].matches("kernel.configC", "h") and waivers[1].matches("kernel.config[CONFIG_VFIO]", "h")


def test_an_expired_waiver_stops_waiving_and_says_so():
    result = apply_waivers(failed("kernel.config[CONFIG_VFIO]"), "kvm1", parse_waivers(GOOD), today=dt.date(2026, 11, 25))
    assert result.outcome is Outcome.FAILED
    assert "waiver expired on 2020-01-01 (owner kernel@example.com)" in result.message


def test_passed_checks_are_not_touched():
    ok = CheckResult("kernel.config[CONFIG_VFIO]", Outcome.PASSED, Severity.REQUIRED, "CONFIG_VFIO=m")
    assert apply_waivers(ok, "h", parse_waivers(GOOD)).outcome is Outcome.PASSED


@pytest.mark.parametrize("text, message", [
    ('[[waiver]]\ncheck = "x"\nreason = "r"\nowner = "o"\n', "waivers.toml:1: waiver lacks expires"),
    ('\n\n[[waiver]]\ncheck = "x"\nreason = "r"\nowner = "o"\nexpires = "soon"\n', "waivers.toml:3: expires 'soon' is not a date"),
    ('[[waiver]]\ncheck = "x"\nreason = "r"\nowner = "o"\nexpires = 2026-01-01\nowner_email = "a"\n', "unknown field 'owner_email'"),
    ('[[waiver]\ncheck = "x"\n', "waivers.toml: "),
    ('[waivers]\n', "unknown table or key 'waivers'"),
])
def test_malformed_files_name_the_line(text, message):
    with pytest.raises(WaiverError) as excinfo:
        parse_waivers(text)
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_cli_waives_this_machines_failures_and_rejects_a_bad_file_before_running(tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\ncheck = "*"\nhost = "local://"\nreason = "CI VM: no IOMMU"\n'
                       'owner = "ci@example.com"\nexpires = 2099-01-01\n')
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--waivers", waivers, "--output", tmp_path / "o"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    [host] = json.loads((tmp_path / "o" / "summary.json").read_text())["hosts"]
    # Waived failures do not fail the host; a required check this machine could not collect still leaves it incomplete.
    assert all(c["outcome"] in ("passed", "skipped", "waived") for c in host["checks"])
    lacking = [c for c in host["checks"] if c["severity"] == "required" and c.get("skip_reason") == "not-collected"]
    assert (proc.returncode, host["verdict"]) == ((1, "incomplete") if lacking else (0, "certified")), lacking
    bad = tmp_path / "bad.toml"
    bad.write_text('[[waiver]]\ncheck = "*"\n')
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--waivers", bad, "--output", tmp_path / "o2"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"vfio-certify: {bad}:1: waiver lacks reason, owner, expires"
    assert not (tmp_path / "o2").exists()


def test_a_multi_line_reason_keeps_the_message_on_one_line():
    waivers = parse_waivers('[[waiver]]\ncheck = "iommu.*"\nreason = """GPU and audio\ngo together"""\n'
                            'owner = "virt@example.com"\nexpires = 2099-12-31\n')
    result = apply_waivers(failed(), "kvm1", waivers, today=dt.date(2026, 11, 25))
    assert result.outcome is Outcome.WAIVED and "\n" not in result.message
    assert "GPU and audio go together" in result.message and "\n" in result.waiver["reason"]


@pytest.mark.parametrize("text, message", [
    ('waiver = ["x"]\n', "waivers.toml:1: each waiver must be a [[waiver]] table, not 'x'"),
    ('\nwaiver = "x"\n', "waivers.toml:2: 'waiver' must be [[waiver]] tables"),
    ('# one\n[waiver]\ncheck = "x"\n', "waivers.toml:2: 'waiver' must be [[waiver]] tables"),
    ('waiver = [{check = "x", reason = "r", owner = "o", expires = 2026-01-01}, 3]\n',
     "waivers.toml:1: each waiver must be a [[waiver]] table, not 3"),
    ('[[waiver]]\ncheck = 1\nreason = "r"\nowner = "o"\nexpires = 2026-01-01\n', "waivers.toml:1: check must be a string"),
    ('[[waiver]]\ncheck = "x"\nhost = ["a"]\nreason = "r"\nowner = "o"\nexpires = 2026-01-01\n',
     "waivers.toml:1: host must be a string"),
    ('[[waiver]]\ncheck = "x"\nreason = "r"\nowner = "o"\nexpires = 12\n', "waivers.toml:1: expires must be a date"),
    ('[[waiver]]\ncheck = "x"\nreason = "r"\nowner = "o"\nexpires = 12:00:00\n', "waivers.toml:1: expires must be a date"),
])
def test_malformed_shapes_are_a_waiver_error_naming_the_line(text, message):
    with pytest.raises(WaiverError) as excinfo:
        parse_waivers(text)
    assert str(excinfo.value).startswith(message) and "\n" not in str(excinfo.value)


def test_cli_refuses_a_waiver_that_is_not_a_table_with_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('waiver = ["x"]\n')
    proc = subprocess.run([sys.executable, "-m", "vfio_certify.cli", "--waivers", bad, "--output", tmp_path / "o"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith(f"vfio-certify: {bad}:1: ") and "Traceback" not in proc.stderr


def test_line_numbers_are_not_shifted_by_a_multi_line_string():
    text = ('[[waiver]]\ncheck = "a"\nreason = """two\n[[waiver]]\nlines"""\nowner = "o"\nexpires = 2099-01-01\n\n'
            '[[waiver]]\ncheck = "b"\nreason = "r"\nowner = "o"\n')
    with pytest.raises(WaiverError) as excinfo:
        parse_waivers(text)
    assert str(excinfo.value) == "waivers.toml:9: waiver lacks expires"


def test_brackets_in_the_host_glob_are_literal():
    [waiver] = parse_waivers('[[waiver]]\ncheck = "*"\nhost = "ssh://root@[fe80::1]:*"\nreason = "r"\nowner = "o"\n'
                             'expires = 2099-01-01\n')
    assert waiver.matches("iommu.enabled", "ssh://root@[fe80::1]:22")
    assert not waiver.matches("iommu.enabled", "ssh://root@f:22")
