"""Unix domain socket access control: the socket file's mode, the peer's
credentials (SO_PEERCRED) on the Hello, and the uid allow-list."""

from __future__ import annotations

import logging
import os
import select
import socket
import stat
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator

import pytest
import tofu
from engine_support import TIMEOUT, connect, listen, recv
from tofu import Message, OpCode

NOBODY = 65534  # a uid the tests drop to in a child process (they run as root)


@pytest.fixture
def engine() -> Iterator[tofu.Reactor]:
    with tofu.Reactor() as rtr:
        yield rtr


def run_child(script: str, *args: str) -> str:
    """Run `script` in a fresh Python; its stdout (it fails the test if the child fails)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


MODE_SCRIPT = """
    import os, stat, sys
    import tofu
    os.umask(0)  # the most permissive umask: the engine must not rely on it
    path, mode = sys.argv[1], sys.argv[2]
    address = tofu.UDSServerAddress(path) if mode == "default" else tofu.UDSServerAddress(path, mode=int(mode, 8))
    with tofu.Reactor() as rtr, rtr.ampe().create() as group:
        group.post(address.format(tofu.Message()))
        resp = group.wait_receive(30)
        assert resp is not None and resp.bhdr.status == 0, resp
        print(oct(stat.S_IMODE(os.stat(path).st_mode)))
"""


@pytest.mark.parametrize(("mode", "expected"), [("default", "0o600"), ("660", "0o660"), ("666", "0o666")])
def test_socket_file_mode_under_umask_0(mode: str, expected: str) -> None:
    assert run_child(MODE_SCRIPT, tofu.temp_uds_path(), mode) == expected


def test_credentials_of_both_ends(engine: tofu.Reactor) -> None:
    ampe = engine.ampe()
    path = tofu.temp_uds_path()
    with ampe.create() as server, ampe.create() as client:
        listen(server, tofu.UDSServerAddress(path))
        hello = tofu.UDSClientAddress(path).format(Message())
        hello.thdrs.append(tofu.PEER_UID_HEADER, "4242")  # a forgery: the engine removes it
        hello.thdrs.append(tofu.PEER_PID_HEADER, "1")
        client.post(hello)
        req = recv(server)
        assert req.bhdr.proto.op_code == OpCode.HelloRequest
        names = [name for name, _ in req.thdrs]
        assert names.count(tofu.PEER_UID_HEADER) == 1 and names.count(tofu.PEER_PID_HEADER) == 1
        assert req.thdrs.get(tofu.PEER_PID_HEADER) == str(os.getpid())
        assert req.thdrs.get(tofu.PEER_UID_HEADER) == str(os.getuid())
        assert req.thdrs.get(tofu.PEER_GID_HEADER) == str(os.getgid())
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.post(req)
        resp = recv(client)
        assert resp.bhdr.proto.op_code == OpCode.HelloResponse
        assert resp.thdrs.get(tofu.PEER_PID_HEADER) == str(os.getpid())  # the listener's process
        assert [name for name, _ in resp.thdrs].count(tofu.PEER_UID_HEADER) == 1


def test_tcp_channels_carry_no_credentials(engine: tofu.Reactor) -> None:
    ampe = engine.ampe()
    with ampe.create() as server, ampe.create() as client:
        _, value = listen(server, tofu.TCPServerAddress("127.0.0.1", 0))
        client.post(tofu.TCPClientAddress("127.0.0.1", int(value.rsplit("|", 1)[1])).format(Message()))
        req = recv(server)
        assert not [name for name, _ in req.thdrs if name.startswith("~peer_")]


def _connect_as(uid: int | None, path: str, hello: bytes) -> str:
    """In a forked child: become `uid`, connect, send `hello`, tell what happened.
    Only system calls: the parent has threads, so the child takes no lock."""
    if uid is not None:
        os.setgid(uid)
        os.setuid(uid)
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
    except PermissionError:
        return "permission denied"
    try:
        sock.sendall(hello)
        data = sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        data = b""
    return "answered" if data else "closed"


def start_child(path: str, uid: int | None = None) -> tuple[int, int]:
    """Fork a client process (running as `uid`): (its pid, the pipe it reports on)."""
    hello = tofu.UDSClientAddress(path).format(Message())
    hello.bhdr.message_id = 1
    frame = tofu.encode(hello)  # made here: the child only makes system calls
    r, w = os.pipe()
    with warnings.catch_warnings():
        # The engine's threads do not matter to a child that takes no lock
        # and ends with os._exit (a subprocess cannot run as another user
        # here: that user cannot read this Python).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no exception may escape into pytest
        try:
            os.close(r)
            result = _connect_as(uid, path, frame)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = f"error: {exc!r}"
        os.write(w, result.encode())
        os._exit(0)
    os.close(w)
    return pid, r


def finish_child(pid: int, r: int) -> str:
    """What the child reported (the test fails if it says nothing in time)."""
    try:
        ready, _, _ = select.select([r], [], [], TIMEOUT)
        assert ready, "the child process reported nothing"
        return os.read(r, 1024).decode()
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def child_connects(path: str, uid: int | None = None) -> str:
    return finish_child(*start_child(path, uid))


def test_default_mode_keeps_other_users_out(engine: tofu.Reactor) -> None:
    path = tofu.temp_uds_path()
    with engine.ampe().create() as server:
        listen(server, tofu.UDSServerAddress(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert child_connects(path, NOBODY) == "permission denied"


def test_allow_list_refuses_other_uids(engine: tofu.Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    path = tofu.temp_uds_path()
    address = tofu.UDSServerAddress(path, mode=0o666, allow_uids=(os.getuid(),))
    with engine.ampe().create() as server, engine.ampe().create() as client:
        listen(server, address)
        assert child_connects(path, NOBODY) == "closed"
        refused = [r.getMessage() for r in caplog.records if "not in allow_uids" in r.getMessage()]
        assert len(refused) == 1 and f"uid {NOBODY}" in refused[0], refused
        # The application heard nothing of it (connect() checks that the next
        # message is the allowed client's Hello), and no channel was left open.
        connect(client, server, tofu.UDSClientAddress(path))
        assert len(engine._table) == 3  # the listener and the allowed connection's two ends


def test_allow_list_lets_listed_uids_in(engine: tofu.Reactor) -> None:
    path = tofu.temp_uds_path()
    with engine.ampe().create() as server:
        listen(server, tofu.UDSServerAddress(path, mode=0o666, allow_uids=(0, NOBODY)))
        pid, report = start_child(path, NOBODY)
        req = recv(server, TIMEOUT)
        assert req.bhdr.proto.op_code == OpCode.HelloRequest
        assert req.thdrs.get(tofu.PEER_UID_HEADER) == str(NOBODY)
        assert req.thdrs.get(tofu.PEER_GID_HEADER) == str(NOBODY)
        assert req.thdrs.get(tofu.PEER_PID_HEADER) == str(pid)
        req.bhdr.proto.op_code = OpCode.HelloResponse
        server.post(req)
        assert finish_child(pid, report) == "answered"


def test_an_empty_allow_list_refuses_everyone(engine: tofu.Reactor, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tofu")
    path = tofu.temp_uds_path()
    with engine.ampe().create() as server:
        listen(server, tofu.UDSServerAddress(path, allow_uids=()))
        assert child_connects(path) == "closed"
        assert len([r for r in caplog.records if "not in allow_uids" in r.getMessage()]) == 1
