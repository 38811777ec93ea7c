"""Streaming both ways with the `more` flag, on tofu.Server and tofu.connect.
(examples/streaming.py is the same against the engine.)

The client uploads 300 KB as a stream of 10 Requests under one message id
(client.stream with an iterable). The server gets them joined, and streams
back the bytes reversed as Responses, the first carrying a `sha256` header;
the client iterates over the frames as they come and checks both.

    python examples/service_streaming.py
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator

import tofu

CHUNK = 32 * 1024  # a frame's body holds at most 65535 bytes


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def reverse(request: tofu.Request) -> Iterator[tuple[dict[str, str], bytes] | bytes]:
    data = request.body  # the frames of the upload, joined
    digest = hashlib.sha256(data).hexdigest()
    print(f"server: received {len(data)} bytes in {len(request.frames)} frames, sha256 {digest[:16]}...")
    parts = chunks(data[::-1])
    yield {"sha256": digest}, parts[0]  # the first frame carries the header
    yield from parts[1:]


def main() -> int:
    payload = os.urandom(300_000)
    with tofu.Server("tcp://127.0.0.1:0", reverse) as server, tofu.connect(server.urls[0]) as client:
        frames = list(client.stream(chunks(payload), timeout=10.0))
        print(f"client: uploaded {len(payload)} bytes")
    received = b"".join(f.body for f in frames)
    ok = received == payload[::-1] and frames[0].headers["sha256"] == hashlib.sha256(payload).hexdigest()
    verdict = "match" if ok else "DIFFER"
    print(f"client: downloaded {len(received)} bytes in {len(frames)} frames; digest and data {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
