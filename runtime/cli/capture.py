"""Packet captures for `tofu decode`: pcap and pcapng files to TCP byte streams.

`read_capture(data)` finds every TCP connection in a capture and returns, for
each direction of each one, the bytes that direction carried, in sequence
order: what a tofu decoder reads. Written here rather than taken from a
packet library because the job is small and stable (two file formats, a few
link layers, IPv4/IPv6, TCP) and the `tofu` command should not need another
dependency for it.

Understood: pcap (microsecond and nanosecond, either byte order) and pcapng
(any number of sections and interfaces; enhanced, simple and obsolete packet
blocks); link types Ethernet (with VLAN tags), BSD loopback (NULL/LOOP), raw
IP, Linux cooked (SLL and SLL2). Reassembly follows sequence numbers, not
capture order: out-of-order segments are put in place, retransmitted bytes
are kept once (the first copy wins), and a hole (a segment the capture
missed) ends what can be decoded of that direction (`TcpStream.gap`).
IP fragments are not reassembled (counted in `Capture.skipped`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"  # the Section Header Block's type

_LINK_NULL, _LINK_ETHERNET, _LINK_RAW, _LINK_LOOP, _LINK_SLL, _LINK_SLL2 = 0, 1, 101, 108, 113, 276
_LINK_RAW_ALT = {12, 14, 228, 229}  # other numbers for raw IP (some BSDs; IPv4-only, IPv6-only)
_TCP = 6
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44


class CaptureError(ValueError):
    """The file is not a capture this reader understands, or is damaged."""


def capture_format(data: bytes) -> str | None:
    """'pcap', 'pcapng', or None when `data` does not start like a capture file."""
    if data[:4] in PCAP_MAGICS:
        return "pcap"
    if data[:4] == PCAPNG_MAGIC:
        return "pcapng"
    return None


@dataclass
class TcpStream:
    """One direction of one TCP connection."""

    src: str  # "HOST:PORT" ([HOST]:PORT for IPv6)
    dst: str
    data: bytes = b""
    segments: int = 0  # segments with payload, retransmissions included
    gap: int | None = None  # where the capture missed bytes: the stream offset of the hole

    @property
    def label(self) -> str:
        return f"{self.src} -> {self.dst}"


@dataclass
class Capture:
    format: str
    packets: int = 0
    skipped: int = 0  # not TCP over IP, IP fragments, link types this reader does not know
    streams: list[TcpStream] = field(default_factory=list)


@dataclass
class _Direction:
    src: str
    dst: str
    isn: int | None = None  # the SYN's sequence number, when captured
    segments: list[tuple[int, int, bytes]] = field(default_factory=list)  # (seq, arrival, payload)


def read_capture(data: bytes) -> Capture:
    """Every TCP direction with payload in a pcap or pcapng capture, in order of first appearance."""
    fmt = capture_format(data)
    if fmt is None:
        raise CaptureError("not a pcap or pcapng capture")
    cap = Capture(fmt)
    directions: dict[tuple[str, str], _Direction] = {}
    packets = _pcap_packets(data) if fmt == "pcap" else _pcapng_packets(data)
    for linktype, frame in packets:
        cap.packets += 1
        seg = _tcp_segment(linktype, frame)
        if seg is None:
            cap.skipped += 1
            continue
        src, dst, seq, syn, payload = seg
        d = directions.get((src, dst))
        if d is None:
            d = directions[(src, dst)] = _Direction(src, dst)
        if syn:
            d.isn = seq
        if payload:  # a SYN's own data (TCP Fast Open) starts one past its sequence number
            d.segments.append(((seq + 1) & 0xFFFFFFFF if syn else seq, len(d.segments), payload))
    for d in directions.values():
        if d.segments:
            cap.streams.append(_reassemble(d))
    return cap


def _reassemble(d: _Direction) -> TcpStream:
    # Sequence numbers wrap at 2**32: offsets are taken relative to the SYN (or,
    # without one, to the first segment) modulo 2**32, read as signed.
    ref = (d.isn + 1) if d.isn is not None else d.segments[0][0]

    def offset(seq: int) -> int:
        rel = (seq - ref) & 0xFFFFFFFF
        return rel - (1 << 32) if rel >= 1 << 31 else rel

    placed = sorted((offset(seq), arrival, payload) for seq, arrival, payload in d.segments)
    start = 0 if d.isn is not None else placed[0][0]
    out = bytearray()
    pos = start
    gap = None
    for off, _, payload in placed:
        end = off + len(payload)
        if end <= pos:
            continue  # a retransmission of bytes already placed
        if off > pos:
            gap = pos - start  # bytes the capture does not have
            break
        out += payload[pos - off :]  # an overlap keeps the first copy of its bytes
        pos = end
    return TcpStream(d.src, d.dst, bytes(out), len(d.segments), gap)


# ---------------------------------------------------------------- file formats


def _pcap_packets(data: bytes) -> list[tuple[int, bytes]]:
    bo = PCAP_MAGICS[data[:4]]
    if len(data) < 24:
        raise CaptureError("pcap: the file header is cut short")
    linktype = struct.unpack_from(bo + "I", data, 20)[0] & 0xFFFF
    out = []
    pos = 24
    while pos < len(data):
        if pos + 16 > len(data):
            raise CaptureError(f"pcap: a record header is cut short at offset {pos}")
        incl = struct.unpack_from(bo + "I", data, pos + 8)[0]
        if pos + 16 + incl > len(data):
            raise CaptureError(f"pcap: the packet at offset {pos} is cut short")
        out.append((linktype, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return out


def _pcapng_packets(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    bo = "<"
    interfaces: list[int] = []  # link type of each interface of the current section
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise CaptureError(f"pcapng: a block is cut short at offset {pos}")
        if data[pos : pos + 4] == PCAPNG_MAGIC:  # a new section: its own byte order and interfaces
            magic = data[pos + 8 : pos + 12]
            if magic == b"\x4d\x3c\x2b\x1a":
                bo = "<"
            elif magic == b"\x1a\x2b\x3c\x4d":
                bo = ">"
            else:
                raise CaptureError(f"pcapng: bad byte-order magic at offset {pos + 8}")
            interfaces = []
        btype, blen = struct.unpack_from(bo + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            raise CaptureError(f"pcapng: bad block length {blen} at offset {pos}")
        body = data[pos + 8 : pos + blen - 4]
        if btype == 1:  # Interface Description Block
            interfaces.append(struct.unpack_from(bo + "H", body, 0)[0])
        elif btype == 6:  # Enhanced Packet Block
            ifid, _, _, caplen = struct.unpack_from(bo + "IIII", body, 0)
            out.append((_interface(interfaces, ifid, pos), body[20 : 20 + caplen]))
        elif btype == 3:  # Simple Packet Block
            origlen = struct.unpack_from(bo + "I", body, 0)[0]
            out.append((_interface(interfaces, 0, pos), body[4 : 4 + min(origlen, len(body) - 4)]))
        elif btype == 2:  # Packet Block (obsolete)
            ifid = struct.unpack_from(bo + "H", body, 0)[0]
            caplen = struct.unpack_from(bo + "I", body, 12)[0]
            out.append((_interface(interfaces, ifid, pos), body[20 : 20 + caplen]))
        pos += blen
    return out


def _interface(interfaces: list[int], ifid: int, pos: int) -> int:
    if ifid >= len(interfaces):
        raise CaptureError(f"pcapng: the packet at offset {pos} names interface {ifid}, which is not described")
    return interfaces[ifid]


# ---------------------------------------------------------------- link, IP, TCP


def _tcp_segment(linktype: int, frame: bytes) -> tuple[str, str, int, bool, bytes] | None:
    """(src, dst, seq, syn, payload) of a TCP segment, or None for anything else."""
    ip = _ip_packet(linktype, frame)
    if ip is None or len(ip) < 1:
        return None
    version = ip[0] >> 4
    if version == 4:
        if len(ip) < 20:
            return None
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        flags_frag = struct.unpack_from(">H", ip, 6)[0]
        if ip[9] != _TCP or flags_frag & 0x3FFF:  # not TCP, or a fragment
            return None
        host_src = str(ipaddress.IPv4Address(ip[12:16]))
        host_dst = str(ipaddress.IPv4Address(ip[16:20]))
        tcp = ip[ihl : min(total, len(ip))] if total else ip[ihl:]
    elif version == 6:
        if len(ip) < 40:
            return None
        plen = struct.unpack_from(">H", ip, 4)[0]
        nxt, pos, end = ip[6], 40, min(40 + plen, len(ip))
        while nxt in _IPV6_EXTENSIONS and pos + 2 <= end:
            nxt, pos = ip[pos], pos + (ip[pos + 1] + 1) * 8
        if nxt != _TCP:  # another protocol, or a fragment
            return None
        host_src = f"[{ipaddress.IPv6Address(ip[8:24])}]"
        host_dst = f"[{ipaddress.IPv6Address(ip[24:40])}]"
        tcp = ip[pos:end]
    else:
        return None
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
    doff = (tcp[12] >> 4) * 4
    syn = bool(tcp[13] & 0x02)
    return f"{host_src}:{sport}", f"{host_dst}:{dport}", seq, syn, bytes(tcp[doff:])


def _ip_packet(linktype: int, frame: bytes) -> bytes | None:
    if linktype == _LINK_ETHERNET:
        pos, ethertype = 12, None
        while pos + 2 <= len(frame):
            ethertype = struct.unpack_from(">H", frame, pos)[0]
            if ethertype in (0x8100, 0x88A8):  # VLAN tags
                pos += 4
                continue
            break
        return frame[pos + 2 :] if ethertype in (0x0800, 0x86DD) else None
    if linktype in (_LINK_NULL, _LINK_LOOP):
        return frame[4:]  # the address family (host or network order): the IP version nibble says it all
    if linktype == _LINK_RAW or linktype in _LINK_RAW_ALT:
        return frame
    if linktype == _LINK_SLL:
        return frame[16:] if frame[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if linktype == _LINK_SLL2:
        return frame[20:] if frame[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    return None
