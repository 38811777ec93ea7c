"""A fault-injecting TCP proxy for tests: the network misbehaving on purpose.

    with FaultProxy(("127.0.0.1", server_port), up=Fault(segment=1)) as proxy:
        connect the client to ("127.0.0.1", proxy.port)

Every connection accepted on `proxy.port` is forwarded to `upstream` by two
threads, one per direction: `up` is client -> server, `down` server -> client.
A Fault shapes one direction:

- `delay`: seconds added before each chunk is forwarded (latency);
- `segment`: forward at most this many bytes per send, with TCP_NODELAY
  (1 = one-byte segments);
- `rate`: bytes per second (throttled bandwidth);
- `after` + `action`: once `after` bytes went through, do `action`:
  "cut" closes both connections (FIN both ways, mid-stream),
  "half_close" ends only this direction (the receiver sees EOF; the other
  direction stays open until its sender closes), "reset" aborts both
  connections (SO_LINGER 0: the peers see ECONNRESET).

`proxy.up` and `proxy.down` may be replaced while connections run (for
example to cut after the handshake: `after=proxy.forwarded["up"] + n`).
`proxy.fired` is set once an action has happened. Sleeping is the fault
itself here (latency, bandwidth), never a stand-in for synchronisation.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Literal, Self

Action = Literal["cut", "half_close", "reset"]
_LINGER_0 = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Fault:
    delay: float = 0.0
    segment: int | None = None
    rate: int | None = None
    after: int | None = None
    action: Action | None = None


class _Pair:
    """One proxied connection: the client side and the server side."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.lock = threading.Lock()
        self.done = 0  # directions finished
        self.aborted = False

    def _wake(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked in recv; sends nothing
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            if self.aborted:
                return
            self.aborted = True
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def reset(self) -> None:
        with self.lock:
            if self.aborted:
                return
            self.aborted = True
        self._wake()
        for sock in (self.client, self.server):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            except OSError:
                pass
            sock.close()

    def finished(self) -> None:
        """A direction is over; close both sockets once both are."""
        with self.lock:
            self.done += 1
            last = self.done == 2
        if last:
            self.client.close()
            self.server.close()


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], up: Fault | None = None, down: Fault | None = None) -> None:
        self.upstream = upstream
        self.up = up or Fault()
        self.down = down or Fault()
        self.fired = threading.Event()
        self.forwarded = {"up": 0, "down": 0}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._start(self._accept_loop, "faultproxy-accept")

    def _start(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the proxy is closing
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pair = _Pair(client, server)
            self._pairs.append(pair)
            self._start(self._pump, "faultproxy-up", pair, client, server, self.up, "up")
            self._start(self._pump, "faultproxy-down", pair, server, client, self.down, "down")

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, fault: Fault, direction: str) -> None:
        if fault.segment is not None:
            dst.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    chunk = src.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if not pair.aborted:
                        try:
                            dst.shutdown(socket.SHUT_WR)  # pass the end of stream on
                        except OSError:
                            pass
                    return
                fault = self.up if direction == "up" else self.down  # a test may change it meanwhile
                if fault.after is not None and self.forwarded[direction] + len(chunk) >= fault.after:
                    self._send(dst, chunk[: fault.after - self.forwarded[direction]], fault, direction)
                    self._act(pair, dst, fault)
                    if fault.action == "half_close":
                        # Read on and drop what the sender still writes, until it
                        # closes: the other direction stays whole (a socket closed
                        # with unread bytes would reset the sender, which then
                        # loses what it had received and not yet read).
                        while src.recv(65536):
                            pass
                    return
                self._send(dst, chunk, fault, direction)
        except OSError:
            return  # the other direction closed or reset the pair
        finally:
            pair.finished()

    def _send(self, dst: socket.socket, data: bytes, fault: Fault, direction: str) -> None:
        if fault.delay:
            time.sleep(fault.delay)
        step = fault.segment or len(data) or 1
        if fault.rate is not None:
            step = min(step, max(1, fault.rate // 50))
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            self.forwarded[direction] += len(piece)  # counted first: a peer never sees bytes not yet counted
            dst.sendall(piece)
            if fault.rate is not None:
                time.sleep(len(piece) / fault.rate)

    def _act(self, pair: _Pair, dst: socket.socket, fault: Fault) -> None:
        if fault.action == "cut":
            pair.cut()
        elif fault.action == "reset":
            pair.reset()
        elif fault.action == "half_close":
            dst.shutdown(socket.SHUT_WR)
        self.fired.set()

    def close(self) -> None:
        """Stop accepting, abort every connection still open and wait for the threads."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        except OSError:
            pass
        self._listener.close()
        for pair in self._pairs:
            pair.reset()
        for thread in self._threads:
            thread.join(10)
            assert not thread.is_alive(), f"proxy thread {thread.name} did not stop"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
