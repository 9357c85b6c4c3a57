"""junit.xml's text goes through pytest's bin_xml_escape only when it holds a character XML 1.0 forbids: the
result must be pytest's, character for character, for every code point."""
from __future__ import annotations

from _pytest.junitxml import bin_xml_escape as pytests

from vfio_certify.report.junit import bin_xml_escape

EDGES = [0x0, 0x8, 0x9, 0xA, 0xB, 0xC, 0xD, 0xE, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xD7FF, 0xD800, 0xDFFF, 0xE000,
         0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF]


def _code_points():
    yield from range(0x800)  # every control character, ASCII and Latin
    yield from range(0x800, 0x110000, 251)  # a stride through the rest
    for edge in EDGES:  # each side of every range's edge
        yield from (p for p in (edge - 1, edge, edge + 1) if 0 <= p <= 0x10FFFF)


def test_every_code_point_is_written_as_pytest_writes_it():
    for point in _code_points():
        text = f"disk {chr(point)} on 0000:07:00.1"
        assert bin_xml_escape(text) == pytests(text), hex(point)


def test_text_with_nothing_forbidden_is_returned_as_it_is():
    text = "IOMMU group 7 holds 0000:07:00.0 (igb) and 0000:07:00.1 — «vfio-pci» 🙂"
    assert bin_xml_escape(text) is text
    assert bin_xml_escape("nul\x00 and esc\x1b") == "nul#x00 and esc#x1B"
