"""The lab's guest image and USB disk image, checked on the host (no VM)."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import subprocess

import pytest

from vfio_certify.lab import cpio, guest_image, initramfs, tools


def _skip_unless_image_tools() -> None:
    gone = tools.missing(("busybox", "dropbear", "dropbearkey", "ssh-keygen", "ldd"))
    if gone:
        pytest.skip(f"needs {gone[0][1]} for {gone[0][0]} (scripts/setup.sh installs it)")
    if tools.newest_kernel() is None:
        pytest.skip("needs linux-image-amd64 for /boot/vmlinuz-* (scripts/setup.sh installs it)")


def parse_newc(data: bytes) -> dict:
    """{name: (mode, payload, (devmajor, devminor))} of a newc cpio archive."""
    out, off = {}, 0
    while True:
        assert data[off:off + 6] == b"070701", f"bad magic at {off}"
        f = [int(data[off + 6 + 8 * i: off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[off + 110: off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        payload = data[off: off + size]
        off = (off + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        assert name not in out, f"duplicate {name}"
        out[name] = (mode, payload, (rmaj, rmin))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    _skip_unless_image_tools()
    return guest_image.build_guest_image()


@pytest.fixture(scope="module")
def archive(image):
    return parse_newc(gzip.decompress(image.initrd.read_bytes()))


def test_cpio_writer_roundtrip(tmp_path):
    import io

    buf = io.BytesIO()
    cpio.write_cpio([("directory", "etc", 0o755),
                     ("file", "etc/x", b"hello", 0o600),
                     ("symlink", "bin/sh", "/bin/busybox"),
                     ("chardev", "dev/console", 5, 1, 0o600)], buf)
    got = parse_newc(buf.getvalue())
    assert stat.S_ISDIR(got["etc"][0])
    assert got["etc/x"][1] == b"hello" and stat.S_IMODE(got["etc/x"][0]) == 0o600
    assert stat.S_ISLNK(got["bin/sh"][0]) and got["bin/sh"][1] == b"/bin/busybox"
    assert stat.S_ISCHR(got["dev/console"][0]) and got["dev/console"][2] == (5, 1)
    if tools.which("cpio"):  # the real tool agrees
        p = subprocess.run(["cpio", "-t"], input=buf.getvalue(), capture_output=True)
        assert p.returncode == 0 and b"etc/x" in p.stdout


def test_busybox_and_applet_links(archive):
    mode = archive["bin/busybox"][0]
    assert stat.S_ISREG(mode) and mode & 0o111
    links = {n: p for n, (m, p, _) in archive.items() if stat.S_ISLNK(m)}
    assert not [n for n in archive if os.path.basename(n) == "busybox" and n in links], \
        "a link named busybox must not exist"
    for applet in ("bin/sh", "sbin/ip", "sbin/insmod", "bin/mount", "usr/bin/sha256sum",
                   "sbin/init"):
        assert links.get(applet) == b"/bin/busybox", applet
    assert len(links) > 200
    assert "linuxrc" not in archive


def test_dropbear_keys_and_libraries(image, archive):
    assert stat.S_ISREG(archive["usr/sbin/dropbear"][0])
    for guest_path, _real in initramfs.shared_libraries(tools.which("dropbear")):
        assert guest_path.lstrip("/") in archive, guest_path
    mode, auth, _ = archive["root/.ssh/authorized_keys"]
    assert stat.S_IMODE(mode) == 0o600
    pub = (image.directory / "client_ed25519.pub").read_text().split()
    assert auth.decode().split()[:2] == pub[:2] and pub[0] == "ssh-ed25519"
    assert stat.S_IMODE(archive["root/.ssh"][0]) == 0o700
    hostkey = archive["etc/dropbear/dropbear_ed25519_host_key"]
    assert stat.S_IMODE(hostkey[0]) == 0o600
    assert image.host_public_key.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(os.stat(image.client_key).st_mode) == 0o600


def test_modules_decompressed_and_ordered(image, archive):
    loaded = archive["etc/lab-modules"][1].decode().split()
    for m in loaded:
        data = archive[f"lib/modules/lab/{m}"][1]
        assert m.endswith(".ko") and data[:4] == b"\x7fELF", m
    names = [m[:-3].replace("-", "_") for m in loaded]
    for want in ("e1000e", "virtio_net", "xhci_pci", "xhci_hcd", "usb_storage",
                 "sd_mod", "scsi_mod", "usbcore", "ext4", "jbd2"):
        assert want in names, want
    # every module's modules.dep dependencies are loaded before it
    deps = {}
    with open(f"/lib/modules/{image.kernel_version}/modules.dep") as f:
        for line in f:
            mod, _, rest = line.partition(":")
            deps[initramfs._modname(mod)] = [initramfs._modname(d) for d in rest.split()]
    for i, n in enumerate(names):
        for d in deps.get(n, []):
            assert d in names[:i], f"{n} loaded before its dependency {d}"


def test_second_build_is_cached(image):
    again = guest_image.build_guest_image()
    assert again.cached and again.directory == image.directory
    assert again.seconds < 5


def test_usb_disk_holds_the_known_file(tmp_path):
    gone = tools.missing(("mke2fs", "debugfs"))
    if gone:
        pytest.skip(f"needs e2fsprogs for {gone[0][0]}")
    disk = guest_image.build_usb_disk(tmp_path)
    p = subprocess.run([tools.which("debugfs"), "-R", f"cat /{disk.known_file}",
                        str(disk.path)], capture_output=True)
    assert p.returncode == 0
    assert hashlib.sha256(p.stdout).hexdigest() == disk.sha256
    assert guest_image.build_usb_disk(tmp_path).path == disk.path  # reused
