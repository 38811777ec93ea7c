"""Hypothesis strategies and helpers shared by the foundation tests.

A frame is described by a plain `FrameSpec` (what should be on the wire), so a
test can build a Message from it, compute the expected bytes independently,
and compare what the codecs produce against it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import tofu
from hypothesis import strategies as st

# ---------------------------------------------------------------- text headers

_NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters=":\r\n\x00")
_VALUE_CHARS = st.one_of(
    st.sampled_from(":|~-. \t"),  # separators, inner spaces and tabs, often
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
)


def _no_outer_blanks(s: str) -> bool:
    return bool(s) and s == s.strip(" \t")


# Valid header names: non-empty, no ':' CR LF, no leading/trailing space or tab.
header_names = st.text(_NAME_CHARS, min_size=1, max_size=16).filter(_no_outer_blanks)
# Valid header values: non-empty, no CR LF, no leading/trailing space or tab; ':' allowed.
header_values = st.text(_VALUE_CHARS, min_size=1, max_size=24).filter(_no_outer_blanks)
headers = st.lists(st.tuples(header_names, header_values), max_size=6)


def headers_bytes(hdrs: list[tuple[str, str]]) -> bytes:
    """The wire form of `hdrs`, written independently of TextHeaders."""
    return b"".join(f"{n}:{v}\r\n".encode() for n, v in hdrs)


# ---------------------------------------------------------------- bodies


def _pseudo_random_bytes(size_seed: tuple[int, int]) -> bytes:
    size, seed = size_seed
    return random.Random(seed).randbytes(size)


# Mostly small bodies, sometimes any size up to the 65535-byte limit, and the limit itself.
bodies = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=600),
    st.tuples(st.integers(0, tofu.MAX_BODY_LEN), st.integers(0, 2**32)).map(_pseudo_random_bytes),
    st.just(bytes(range(256)) * 255 + bytes(range(255))),  # exactly 65535 bytes
)
small_bodies = st.binary(max_size=40)

# ---------------------------------------------------------------- frames


@dataclass
class FrameSpec:
    """Every field of one frame, as plain ints/str/bytes."""

    op_code: int = 0
    origin: int = 0
    more: int = 0
    internal_a: int = 0
    internal_b: int = 0
    status: int = 0
    channel_number: int = 0
    message_id: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def proto(self) -> int:
        """The proto byte, computed by hand from docs/protocol.md (bit 0 = LSB)."""
        return self.op_code | self.origin << 4 | self.more << 5 | self.internal_a << 6 | self.internal_b << 7

    @property
    def text_headers(self) -> bytes:
        return headers_bytes(self.headers)

    @property
    def size(self) -> int:
        return 16 + len(self.text_headers) + len(self.body)

    def message(self) -> tofu.Message:
        m = tofu.Message()
        b = m.bhdr
        b.channel_number = self.channel_number
        b.status = self.status
        b.message_id = self.message_id
        p = b.proto
        p.op_code = tofu.OpCode(self.op_code)
        p.origin = tofu.OriginFlag(self.origin)
        p.more = tofu.MoreMessagesFlag(self.more)
        p.internal_a = self.internal_a
        p.internal_b = self.internal_b
        for n, v in self.headers:
            m.thdrs.append(n, v)
        m.body.append(self.body)
        return m

    def construct_dict(self) -> dict:
        """The input of structs.Frame.build."""
        return {
            "channel_number": self.channel_number,
            "proto": {
                "op_code": self.op_code,
                "origin": self.origin,
                "more": self.more,
                "internal_a": self.internal_a,
                "internal_b": self.internal_b,
            },
            "status": self.status,
            "message_id": self.message_id,
            "text_headers": self.text_headers,
            "body": self.body,
        }


def frame_specs(body_strategy: st.SearchStrategy[bytes] = bodies, header_strategy=headers):
    return st.builds(
        FrameSpec,
        op_code=st.integers(0, 9),
        origin=st.integers(0, 1),
        more=st.integers(0, 1),
        internal_a=st.integers(0, 1),
        internal_b=st.integers(0, 1),
        status=st.integers(0, 255),
        channel_number=st.integers(0, 0xFFFF),
        message_id=st.integers(0, 2**64 - 1),
        headers=header_strategy,
        body=body_strategy,
    )


small_frame_specs = frame_specs(small_bodies, st.lists(st.tuples(header_names, header_values), max_size=3))

# ---------------------------------------------------------------- checks


def ival(v) -> int:
    """The integer of a construct Enum value (EnumIntegerString or EnumInteger) or a plain int."""
    return v.intvalue if hasattr(v, "intvalue") else int(v)


def assert_message_is(msg: tofu.Message, spec: FrameSpec) -> None:
    """`msg` carries exactly the fields of `spec`, with the documented Python types."""
    b = msg.bhdr
    p = b.proto
    assert b.channel_number == spec.channel_number
    assert b.status == spec.status
    assert b.message_id == spec.message_id
    assert p.op_code == spec.op_code and isinstance(p.op_code, tofu.OpCode)
    assert p.origin == spec.origin and isinstance(p.origin, tofu.OriginFlag)
    assert p.more == spec.more and isinstance(p.more, tofu.MoreMessagesFlag)
    assert p.internal_a == spec.internal_a
    assert p.internal_b == spec.internal_b
    assert list(msg.thdrs) == spec.headers
    assert bytes(msg.thdrs) == spec.text_headers
    assert bytes(msg.body) == spec.body
    assert len(msg.body) == len(spec.body)


def assert_construct_is(parsed, spec: FrameSpec) -> None:
    """A structs.Frame.parse result carries exactly the fields of `spec`."""
    assert parsed.channel_number == spec.channel_number
    assert ival(parsed.proto.op_code) == spec.op_code
    assert ival(parsed.proto.origin) == spec.origin
    assert ival(parsed.proto.more) == spec.more
    assert parsed.proto.internal_a == spec.internal_a
    assert parsed.proto.internal_b == spec.internal_b
    assert ival(parsed.status) == spec.status
    assert parsed.message_id == spec.message_id
    assert parsed.thl == len(spec.text_headers)
    assert parsed.bl == len(spec.body)
    assert parsed.text_headers == spec.text_headers
    assert parsed.body == spec.body


__all__ = [
    "FrameSpec",
    "assert_construct_is",
    "assert_message_is",
    "bodies",
    "frame_specs",
    "header_names",
    "header_values",
    "headers",
    "headers_bytes",
    "ival",
    "small_frame_specs",
]
