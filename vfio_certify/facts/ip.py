"""`ip -o` output, parsed."""
from __future__ import annotations


def parse_ip_addr(text: str) -> dict[str, list[str]]:
    """`ip -o addr` -> interface: addresses (without prefix length)."""
    addresses: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] in ("inet", "inet6"):
            name = fields[1].split("@", 1)[0]
            addresses.setdefault(name, []).append(fields[3].split("/", 1)[0])
    return addresses
