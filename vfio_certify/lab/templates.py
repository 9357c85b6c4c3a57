"""Render the lab's libvirt XML from the jinja2 templates in fixtures/lab/."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid as uuidlib
from pathlib import Path
from typing import Optional

import jinja2

from . import tools

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "lab"

DEFAULT_CMDLINE = (
    "console=ttyS0,115200 panic=-1 loglevel=4 mitigations=off "
    "tsc=reliable no_timer_check rdinit=/init"
)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,  # every value lands in XML attributes/text
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, **values) -> str:
    return _env().get_template(template).render(**values)


def domain_xml(*, name: str, kernel: os.PathLike, initrd: os.PathLike,
               console_log: os.PathLike, ssh_port: int,
               memory_mib: int = 512, vcpus: int = 1, root_ports: int = 6,
               usb_ports: int = 8, cmdline: str = DEFAULT_CMDLINE,
               emulator: Optional[str] = None, uuid: Optional[str] = None,
               mgmt_mac: str = "52:54:00:c0:ff:01", mgmt_slot: str = "0x10", rng_slot: str = "0x11",
               guest_net: str = "10.0.2.0/24", ssh_bind: str = "127.0.0.1") -> str:
    return render(
        "domain.xml.j2", name=name, uuid=uuid or str(uuidlib.uuid4()),
        kernel=str(kernel), initrd=str(initrd), cmdline=cmdline,
        console_log=str(console_log), ssh_port=int(ssh_port),
        memory_mib=int(memory_mib), vcpus=int(vcpus),
        root_ports=int(root_ports), usb_ports=int(usb_ports),
        emulator=emulator or tools.which("qemu-system-x86_64")
        or "/usr/bin/qemu-system-x86_64",
        mgmt_mac=mgmt_mac, mgmt_slot=mgmt_slot, rng_slot=rng_slot, guest_net=guest_net,
        ssh_bind=ssh_bind)


def nic_xml(*, mac: str = "52:54:00:e1:00:0e", alias: str = "ua-labnic0") -> str:
    return render("nic.xml.j2", mac=mac, alias=alias)


def usb_disk_xml(*, source: os.PathLike, target: str = "sda",
                 serial: str = "VFIOLAB0001", alias: str = "ua-labusbdisk0",
                 readonly: bool = True) -> str:
    return render("usb_disk.xml.j2", source=str(source), target=target,
                  serial=serial, alias=alias, readonly=readonly)


def validate(xml: str, schema: str = "domain") -> subprocess.CompletedProcess:
    """Run ``virt-xml-validate`` (libvirt-clients) on xml; returns the
    completed process (returncode 0 = valid). Device snippets validate with
    schema="domain" only inside a domain: wrap them with :func:`wrap_device`."""
    exe = tools.require("virt-xml-validate")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(xml)
        path = f.name
    try:
        return subprocess.run([exe, path, schema], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    finally:
        os.unlink(path)


def wrap_device(domain: str, device: str) -> str:
    """domain XML with device inserted into <devices> (for validation)."""
    return domain.replace("</devices>", device.strip() + "\n  </devices>", 1)
