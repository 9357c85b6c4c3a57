"""The collection script travels as one remote command, and SSH servers limit its length: Dropbear (embedded hosts,
the nested lab's L1) closes the connection on a command over MAX_CMD_LEN, 9000 bytes, before running anything."""
from vfio_certify.collect.runner import Target, _remote_command
from vfio_certify.collect.script import DROPBEAR_MAX_COMMAND, render_script


def test_the_remote_command_fits_dropbears_limit_with_and_without_sudo():
    target = Target("ssh://root@192.0.2.10:22")
    for sudo, user in ((False, None), (True, None), (True, "operator")):
        command = _remote_command(target, sudo, user)
        assert render_script().splitlines()[2] in command  # the script itself travels, past its header
        assert len(command.encode()) < DROPBEAR_MAX_COMMAND, (sudo, len(command.encode()))


def test_comments_stay_out_of_the_script_but_its_header_does_not():
    lines = render_script().splitlines()
    assert lines[:2] == ["#!/bin/sh", "# vfio-certify collector: reads the host, changes nothing."]
    assert not [line for line in lines[2:] if line.lstrip().startswith("#")]


def test_a_link_glob_that_would_take_an_earlier_links_paths_is_refused(monkeypatch):
    """vc_links tells a link's prefix by the first glob that matches it as a case pattern, where `*` spans folders."""
    import pytest

    from vfio_certify.collect import spec
    monkeypatch.setattr(spec, "LINKS", [spec.Link("/sys/bus/pci/devices/*", "../"), spec.PCI_DRIVER])
    with pytest.raises(ValueError, match="matched by the earlier link glob /sys/bus/pci/devices/"):
        render_script()
