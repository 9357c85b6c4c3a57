"""The IOMMU group picture on the certification page: laid out here, drawn as inline SVG by
reports/templates/_iommu_groups.html.j2 (no script; the picture is cut into strips, each its own
<svg>, so a printed page breaks between strips, never through a box).

Groups are boxes around their functions, in lanes: one lane per root port when the PCI tree was
collected (DeviceView.parent, from the folders sysfs nests functions in), a lane per root bus for its
integrated functions, and one for functions whose place was not read; when the tree was not collected,
one lane in address order with the named devices' groups first, and the lane says so. Boxes wrap three to a row; lanes of one or two groups sit side by side; the lanes of the
named devices come first. A group of one function that is not judged is one line. Groups that hold
only bridges (host bridges, root ports, switch ports) are not drawn: they are listed in one line,
so a host with a hundred groups keeps to the groups that hold devices. The named devices are
highlighted, and a group that is not viable has the members that block it marked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from ..facts.pci_topology import is_root_bus, root_port
from ..model import DeviceView, GroupView

COLUMNS = 3
BOX_WIDTH = 312
GAP = 12
WIDTH = COLUMNS * BOX_WIDTH + (COLUMNS - 1) * GAP
HEAD = 24  # a box's title line
ROW = 18  # one function
PAD = 6
LANE_TITLE = 18  # a lane's title line
STRIP_HEIGHT = 640  # bands of lanes per <svg> up to about this height: a printed page breaks between them
CHAR = 7.3  # width of one character of the 12px monospace text, for cutting text to fit
_IDS = re.compile(r"\s*\[[0-9a-fA-F]{4}:[0-9a-fA-F]{4}\]|\s*\(rev [0-9a-fA-F]+\)")  # lspci -nn's ids, revision
TITLE_CHAR = 7.0  # about the width of one character of a lane's title (bold 11.5px sans)
DRIVER_X = 158  # where a function's driver starts in its box

_SHORT_CLASS = {
    "Ethernet controller": "Ethernet", "Network controller": "Network", "VGA compatible controller": "VGA",
    "3D controller": "3D", "Display controller": "Display", "Audio device": "Audio", "USB controller": "USB",
    "Non-Volatile memory controller": "NVMe", "SATA controller": "SATA", "PCI bridge": "PCI bridge",
    "Host bridge": "host bridge", "ISA bridge": "ISA bridge", "Encryption controller": "Crypto",
    "Multimedia audio controller": "Audio", "System peripheral": "System", "SMBus": "SMBus",
    "Signal processing controller": "Signal proc", "Serial bus controller": "Serial bus",
    "RAID bus controller": "RAID", "Non-Essential Instrumentation": "Instrument", "InfiniBand controller": "InfiniBand",
}


@dataclass
class Row:
    y: float
    address: str  # without the usual 0000: domain
    kind: str  # short class
    driver: str
    title: str  # the full line, as a tooltip
    named: bool
    blocks: bool
    bridge: bool
    indent: int = 0


@dataclass
class Box:
    x: float
    y: float
    height: float
    number: int
    status: str  # "not-viable", "viable", "" (not judged)
    label: str  # the status in words
    named: bool
    compact: bool  # one function, not judged: one line, the group number beside it
    rows: list[Row] = field(default_factory=list)


@dataclass
class Lane:
    """The groups under one root port (or all of them, by address, when the tree is unknown)."""

    title: str
    x: float
    y: float
    width: float
    boxes: list[Box]


@dataclass
class Strip:
    """One <svg> of the picture: bands of lanes up to about STRIP_HEIGHT, so print breaks between strips."""

    height: float
    lanes: list[Lane]


@dataclass
class Picture:
    strips: list[Strip]
    drawn: int  # groups drawn
    bridges_only: list[int]  # groups not drawn: bridges only
    tree: bool  # parents were known

    @property
    def width(self) -> int:
        return WIDTH

    @property
    def bridges_only_text(self) -> str:
        return _ranges(self.bridges_only)


def _short_address(address: str) -> str:
    return address[5:] if address.startswith("0000:") else address


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def _is_bridge(device: DeviceView) -> bool:
    """A bridge of any kind: PCI-to-PCI (root and switch ports) or a host bridge (class 0x0600)."""
    return device.is_bridge or device.class_code.startswith("0x0600")


def _bridge_only(group: GroupView) -> bool:
    return bool(group.devices) and not group.has_named_device and all(_is_bridge(d) for d in group.devices)


def _endpoint(group: GroupView) -> DeviceView:
    """The function the group is filed under: its named device, else its first endpoint, else its first member."""
    return next((d for d in group.devices if d.named), None) or next(
        (d for d in group.devices if not _is_bridge(d)), group.devices[0])


NOT_COLLECTED_LANE = "PCI tree not collected: groups in address order"


def _lane(group: GroupView, parents: dict[str, str], names: dict[str, str], tree: bool) -> tuple[str, str]:
    """(sort key, title) of the lane a group is drawn in: root ports in address order, then each root bus's
    integrated functions, then the functions whose place in the tree was not read."""
    if not tree:
        return ("", NOT_COLLECTED_LANE)
    device = _endpoint(group)
    root = root_port(device.address, parents)
    if not root:
        return ("~~", "place in the PCI tree not collected")
    if root == device.address:
        bus = parents[root]
        return (f"~{bus}", f"root bus {bus[len('pci'):]}: integrated functions")
    name = _IDS.sub("", names.get(root, "")).strip()
    return (root, f"root port {_short_address(root)}" + (f" · {name}" if name else ""))


def _fit_title(title: str, width: float) -> str:
    """A lane's title cut to its width: a root port's name loses its head (the vendor), not its tail
    ("root port 00:1c.4 · …chipset PCI Express Root Port #5")."""
    chars = int(width / TITLE_CHAR)
    if len(title) <= chars or " · " not in title:
        return _cut(title, chars)
    head, name = title.split(" · ", 1)
    room = chars - len(head) - 4
    if room < 8:
        return _cut(head, chars)
    tail = name[-room:]
    return f"{head} · …{tail.split(' ', 1)[1] if ' ' in tail[1:] else tail}"


def _depth(address: str, parents: dict[str, str], members: set[str]) -> int:
    depth, seen = 0, set()
    while parents.get(address) in members and not is_root_bus(parents[address]) and address not in seen:
        seen.add(address)
        address = parents[address]
        depth += 1
    return depth


def _box(group: GroupView, x: float, y: float, parents: dict[str, str]) -> Box:
    if group.viable is False:
        blockers = sum(1 for d in group.devices if d.blocks)
        said = f": {blockers} members block" if blockers > 1 else (": 1 member blocks" if blockers else "")
        status, label = "not-viable", "✘ NOT VIABLE" + said
    elif group.viable:
        status, label = "viable", "✔ viable"
    else:
        status, label = "", ""
    members = {d.address for d in group.devices}
    compact = len(group.devices) == 1 and not status and not group.has_named_device
    head = 0 if compact else HEAD
    box = Box(x, y, head + PAD + ROW * max(len(group.devices), 1) - (2 if compact else 0), group.number, status, label,
              group.has_named_device, compact)
    for i, d in enumerate(group.devices):
        indent = min(_depth(d.address, parents, members), 3)
        kind = _SHORT_CLASS.get(d.class_name, d.class_name or d.class_code or "?")
        driver = d.driver or "no driver"
        mark = "◀ " if d.named else ("✘ " if d.blocks else "")
        room = int((BOX_WIDTH - DRIVER_X - 8 - (len(f'group {group.number}') + 1) * CHAR * compact) / CHAR)
        title = " · ".join(part for part in (d.address, d.class_name, d.vendor_device, d.name, f"driver {driver}",
                                       "named with --device" if d.named else "", "blocks the group" if d.blocks else "",
                                       "bridge: does not count" if d.is_bridge else "") if part)
        box.rows.append(Row(y + head + 2 + ROW * i, _short_address(d.address), _cut(kind, 11 - indent),
                            _cut(mark + driver, room), title, d.named, d.blocks, d.is_bridge, indent))
    return box


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0–2, 5, 7–8'."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}–{n}")
            start = None
    return ", ".join(out)


def _lane_block(title: str, groups: list[GroupView], parents: dict[str, str]) -> tuple[Lane, float]:
    """A lane laid out at (0, 0): its title, then its boxes, three to a row; and its height."""
    columns = min(len(groups), COLUMNS)
    width = columns * BOX_WIDTH + (columns - 1) * GAP
    lane = Lane(_fit_title(title, width), 0, 0, width, [])
    y = LANE_TITLE
    for first in range(0, len(groups), COLUMNS):
        row = [_box(g, col * (BOX_WIDTH + GAP), y, parents) for col, g in enumerate(groups[first:first + COLUMNS])]
        lane.boxes += row
        y += max(b.height for b in row) + (GAP // 2 if all(b.compact for b in row) else GAP)
    return lane, y


def _moved(lane: Lane, dx: float, dy: float) -> Lane:
    lane.x, lane.y = lane.x + dx, lane.y + dy
    for box in lane.boxes:
        box.x, box.y = box.x + dx, box.y + dy
        for row in box.rows:
            row.y += dy
    return lane


def picture(groups: list[GroupView], tree: Optional[bool] = None) -> Picture:
    """`tree`: the PCI tree was collected (HostOverview.pci_tree_collected); None: it was if any parent is known."""
    devices = [d for g in groups for d in g.devices]
    parents = {d.address: d.parent for d in devices if d.parent}
    tree = bool(parents) if tree is None else tree
    names = {d.address: d.name for d in devices}
    drawn = [g for g in groups if g.devices and not _bridge_only(g)]
    lanes: dict[tuple[str, str], list[GroupView]] = {}
    flat_named_first = (lambda g: not g.has_named_device) if not tree else (lambda g: False)
    for group in sorted(drawn, key=lambda g: (flat_named_first(g), _endpoint(g).address, g.number)):
        lanes.setdefault(_lane(group, parents, names, tree), []).append(group)
    # the lanes of the named devices first; lanes of one or two groups share a band, side by side
    order = sorted(lanes.items(), key=lambda kv: (not any(g.has_named_device for g in kv[1]), kv[0]))
    strips, band, band_x, band_height = [], [], 0.0, 0.0

    def close_band():
        nonlocal band, band_x, band_height
        if band:
            if strips == [] or strips[-1].height + band_height > STRIP_HEIGHT:
                strips.append(Strip(0.0, []))
            strip = strips[-1]
            strip.lanes += [_moved(lane, 0, strip.height) for lane in band]
            strip.height += band_height
        band, band_x, band_height = [], 0.0, 0.0

    for (_, title), members in order:
        lane, lane_height = _lane_block(title, members, parents)
        if band and band_x + lane.width > WIDTH:
            close_band()
        band.append(_moved(lane, band_x, 0))
        band_x += lane.width + GAP
        band_height = max(band_height, lane_height)
    close_band()
    for strip in strips:
        strip.height += 2
    bridges = sorted(g.number for g in groups if g.devices and _bridge_only(g))
    return Picture(strips, len(drawn), bridges, tree)


def table_order(groups: list[GroupView]) -> list[GroupView]:
    """The group table: the named devices' groups first, then by number."""
    return sorted(groups, key=lambda g: (not g.has_named_device, g.number))
