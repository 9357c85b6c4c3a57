"""../shared/specs/summary.md as executable assertions: other tools read summary.json."""
import re

OUTCOMES = {"passed", "failed", "warning", "skipped", "error", "waived"}
SEVERITIES = {"required", "recommended", "info"}
VERDICTS = {"certified", "not-certified", "incomplete", "unreachable"}
SKIP_REASONS = {"not-collected", "not-applicable"}
CHECK_KEYS = {"id", "outcome", "severity", "message", "evidence", "remediation", "duration_s"}
ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+(\[[^\]\n]+\])?$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def assert_valid_summary(summary: dict) -> None:
    assert summary["format"] == "certify-summary/1"
    assert TIMESTAMP.match(summary["started_at"]), summary["started_at"]
    assert isinstance(summary["duration_s"], (int, float)) and summary["duration_s"] >= 0
    for host in summary["hosts"]:
        assert {"host", "source", "verdict", "checks"} <= set(host) <= {"host", "source", "verdict", "checks", "fix_plan"}, set(host)
        assert host["verdict"] in VERDICTS and isinstance(host["host"], str) and host["source"]
        for check in host["checks"]:
            assert CHECK_KEYS <= set(check) <= CHECK_KEYS | {"waiver", "skip_reason", "caused_by"}, set(check)
            # skip_reason: on every skipped check, on no other
            assert ("skip_reason" in check) == (check["outcome"] == "skipped"), check
            assert check.get("skip_reason", "not-collected") in SKIP_REASONS, check
            if check.get("skip_reason") == "not-collected":  # the message names what it lacked
                assert "not collected" in check["message"], check
            if check.get("skip_reason") == "not-applicable":  # and says why it does not apply
                assert check["message"].startswith("not applicable: "), check
            if "caused_by" in check:  # only when non-empty: the failed checks of this host it follows from
                assert check["caused_by"] and all(ID.match(c) and c != check["id"] for c in check["caused_by"]), check
            assert ID.match(check["id"]), check["id"]
            assert check["outcome"] in OUTCOMES and check["severity"] in SEVERITIES
            assert isinstance(check["message"], str) and "\n" not in check["message"]
            assert all(isinstance(e, str) for e in check["evidence"])
            if check["outcome"] in ("failed", "error", "warning"):
                assert check["remediation"] or check["outcome"] == "warning" or check["id"] == "host.reachable", check
        blocking = [c for c in host["checks"] if c["severity"] == "required" and c["outcome"] in ("failed", "error")]
        assert ("fix_plan" in host) == bool(blocking), host.get("fix_plan")  # present exactly when something blocks
        for step in host.get("fix_plan", []):
            assert set(step) == {"step", "commands", "reboot", "fixes"}, set(step)
            assert isinstance(step["step"], str) and step["step"] and isinstance(step["reboot"], bool)
            assert all(isinstance(c, str) and c for c in step["commands"])
            waived = {c["id"] for c in host["checks"] if c["outcome"] == "waived"}
            assert all(ID.match(f) and f not in waived for f in step["fixes"]), step
        if "fix_plan" in host:  # every blocking check is fixed by a step, and the last step runs vfio-certify again
            assert {c["id"] for c in blocking} <= {f for s in host["fix_plan"] for f in s["fixes"]}
            assert "vfio-certify again" in host["fix_plan"][-1]["step"]
        lacking = [c for c in host["checks"] if c["severity"] == "required" and c.get("skip_reason") == "not-collected"]
        if host["verdict"] == "certified":
            assert not blocking and not lacking, (blocking, lacking)
        if host["verdict"] == "not-certified":
            assert blocking
        if host["verdict"] == "incomplete":
            assert lacking and not blocking, (blocking, lacking)
