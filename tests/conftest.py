import pytest

try:  # tests/ on sys.path (rootdir-relative conftest, no tests/__init__.py)
    from support.sshd import LoopbackSshd
except ImportError:  # tests/ is a package
    from tests.support.sshd import LoopbackSshd


@pytest.fixture(scope="session")
def loopback_sshd():
    """A real OpenSSH server on 127.0.0.1 (see tests/support/sshd.py)."""
    reason = LoopbackSshd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    sshd = LoopbackSshd()
    try:
        yield sshd
    finally:
        sshd.cleanup()
