"""<hostdev> XML for a named device, from the jinja2 templates beside this module (templates/)."""
from __future__ import annotations

import re
from pathlib import Path

import jinja2

from ..devices import DeviceSpec

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def render(template: str, **values) -> str:
    """A template of TEMPLATE_DIR; every value is escaped (it lands in XML attributes and text)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**values)


def alias_for(spec: DeviceSpec) -> str:
    """A libvirt user alias ('ua-' + [A-Za-z0-9_-]) naming the device, so detach and recovery find it."""
    return "ua-vfio-certify-" + re.sub(r"[^A-Za-z0-9_-]", "-", spec.key)


def kept_off_host(driver: str) -> bool:
    """A device deliberately kept away from the host (driverctl, vfio-pci.ids=, pci-stub.ids=): on vfio-pci, a
    vfio-pci variant (mlx5_vfio_pci, ...) or pci-stub. managed='yes' would have libvirt re-probe it onto its host
    driver after the detach. A device with no driver is not: libvirt's re-probe leaves it without one."""
    return driver == "pci-stub" or driver.startswith("vfio") or driver.endswith(("_vfio_pci", "-vfio-pci"))


def managed_for(driver: str) -> bool:
    """managed='yes' (libvirt binds vfio-pci and re-binds the host driver) unless the device is kept off the host."""
    return not kept_off_host(driver)


def hostdev_xml(spec: DeviceSpec, managed: bool = True) -> str:
    """The device as a <hostdev>; every value comes from a validated DeviceSpec, never raw input.
    managed=False (PCI): libvirt neither detaches it from its driver nor re-attaches it afterwards."""
    if spec.is_pci:
        domain, bus, slot_function = spec.key.split(":")
        slot, function = slot_function.split(".")
        return render("hostdev_pci.xml.j2", domain=domain, bus=bus, slot=slot, function=function, alias=alias_for(spec),
                      managed="yes" if managed else "no")
    if spec.usb_vendor_product:
        vendor, product = spec.usb_vendor_product.split(":")
        return render("hostdev_usb.xml.j2", vendor=vendor, product=product, bus=None, device=None, alias=alias_for(spec))
    bus, device = spec.usb_bus_device
    return render("hostdev_usb.xml.j2", vendor=None, product=None, bus=bus, device=device, alias=alias_for(spec))


def nodedev_name(pci_address: str) -> str:
    """libvirt's node device name: 0000:07:00.1 -> pci_0000_07_00_1."""
    return "pci_" + re.sub(r"[:.]", "_", pci_address)


def hostdev_matches(domain_xml: str, spec: DeviceSpec) -> bool:
    """Whether a domain's XML holds this device as a <hostdev> or an <interface type='hostdev'> (SR-IOV VF NICs),
    to refuse a device already assigned."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return False
    interfaces = [i for i in root.iter("interface") if i.get("type") == "hostdev"]
    for hostdev in [*root.iter("hostdev"), *interfaces]:
        source = hostdev.find("source")
        if source is None:
            continue
        if spec.is_pci and (hostdev.get("type") == "pci" or hostdev.tag == "interface"):
            address = source.find("address")
            if address is None:
                continue
            found = "{:04x}:{:02x}:{:02x}.{:x}".format(*(int(address.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")))
            if found == spec.key:
                return True
        if not spec.is_pci and hostdev.get("type") == "usb":
            vendor, product, address = source.find("vendor"), source.find("product"), source.find("address")
            if spec.usb_vendor_product and vendor is not None and product is not None:
                if f"{int(vendor.get('id'), 0):04x}:{int(product.get('id'), 0):04x}" == spec.usb_vendor_product:
                    return True
            if spec.usb_bus_device and address is not None:
                if (int(address.get("bus", "0"), 0), int(address.get("device", "0"), 0)) == spec.usb_bus_device:
                    return True
    return False
