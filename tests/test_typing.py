"""The package is typed (py.typed): it passes `mypy --strict` itself; a
user's program that uses the API the way the README and docs show type-checks under
`mypy --strict`; and mistakes are caught, which proves the checker really
sees tofu's names and types."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"  # the project's mypy settings ([tool.mypy])

USER_PROGRAM = """
import threading

import tofu
import tofu.aio


def serve(port: int) -> None:
    with tofu.Reactor(tofu.Options(initial_pool_msgs=16, max_pool_msgs=64)) as rtr:
        ampe = rtr.ampe()
        with ampe.create() as chnls:
            msg = ampe.get(tofu.AllocationStrategy.always)
            tofu.TCPServerAddress("127.0.0.1", port).format(msg)
            bhdr: tofu.BinaryHeader = chnls.post(msg)
            channel: int = bhdr.channel_number
            resp = chnls.wait_receive(tofu.WAIT_RECEIVE_SEC_TIMEOUT * 5)
            if resp is None:
                return
            op: tofu.OpCode = resp.bhdr.proto.op_code
            bound: int = tofu.TCPServerAddress.from_message(resp).port
            uds: str = tofu.UDSClientAddress.from_message(resp).path
            status: tofu.AmpeStatus = tofu.raw_to_status(resp.bhdr.status)
            error: tofu.AmpeError | None = tofu.raw_to_error(resp.bhdr.status)
            raw: int = tofu.status_to_raw(status)
            headers: list[tuple[str, str]] = list(resp.thdrs)
            body: bytes = bytes(resp.body)
            flags: tuple[bool, bool, bool] = (resp.is_from_engine(), resp.is_from_application(), resp.has_more())
            line: str = resp.bhdr.dump("got")
            ampe.put(resp)
            maybe: tofu.Message | None = ampe.get(tofu.AllocationStrategy.poolOnly)
            ampe.put(maybe)
            threading.Thread(target=chnls.update_receiver, args=(None,)).start()
            try:
                chnls.post(tofu.Message())
            except tofu.InvalidChannelNumber as exc:
                print(exc.status.name, channel, op, error, raw, headers, body, flags, line, bound, uds)
    path: str = tofu.temp_uds_path()
    free: int = tofu.find_free_tcp_port()
    print(path, free, tofu.UDSServerAddress(path), tofu.TCPClientAddress("127.0.0.1", free))


def handler(request: tofu.Request) -> tuple[tofu.Headers, bytes]:
    peer: tofu.Peer = request.peer
    print(peer.channel, peer.identity.get(tofu.PEER_SUBJECT_HEADER), request.frames[0][1])
    request.signal(b"working", {"x-step": 1})
    return request.headers, request.body


def service() -> None:
    policy = tofu.Reconnect(initial=0.1, maximum=5.0, attempts=3)
    with tofu.Server(["tcp://127.0.0.1:0", "uds:///tmp/x.sock"], handler, workers=2, ordered=True) as server:
        urls: list[str] = server.urls
        with tofu.connect(urls[0], headers={"x": "1"}, reconnect=policy, request_timeout=5.0) as client:
            reply: tofu.Reply = client.request(b"x", [("a", "1")], timeout=1.0)
            status: tofu.AmpeStatus = reply.status
            first: str | None = reply.headers.get("a")
            every: list[str] = reply.headers.get_all("a")
            frames: list[bytes] = [frame.body for frame in client.stream([b"a", b"b"])]
            client.signal("tick")
            try:
                reply.raise_for_status()
            except tofu.RequestTimeout as exc:
                waited: float | None = exc.timeout
            except tofu.ConnectionLost as lost:
                why: tofu.AmpeStatus = lost.reason
            print(status, first, every, frames, tofu.ERROR_HEADER)
        closed: int = server.shutdown(1.0)
    try:
        tofu.connect("tcp://127.0.0.1:1", timeout=1.0)
    except tofu.ConnectionRefused as refused:
        print(refused.reason, refused.detail, closed)


async def aservice() -> None:
    async def ahandler(request: tofu.Request) -> bytes:
        return request.body

    async with tofu.aio.Server("tcp://127.0.0.1:0", ahandler, max_tasks=10) as server:
        async with await tofu.aio.connect(server.urls[0]) as client:
            reply: tofu.Reply = await client.request(b"x")
            bodies: list[bytes] = [frame.body async for frame in client.stream(b"y")]
            print(reply.body, bodies)
"""

MISTAKES = """
import tofu

op: str = tofu.OpCode.Request
msg: tofu.Message = tofu.Reactor().ampe().get(tofu.AllocationStrategy.poolOnly)
tofu.Reactor().ampe().create().wait_receive("soon")
"""


@pytest.fixture(scope="module")
def checked_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package laid out as it installs (tofu/ with tofu/generated/ inside)."""
    tree = tmp_path_factory.mktemp("typing")
    shutil.copytree(ROOT / "runtime", tree / "tofu", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "generated", tree / "tofu" / "generated", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def mypy(tree: Path, source: str | None) -> subprocess.CompletedProcess[str]:
    """mypy --strict on a user program (`source`), or on the package itself (None)."""
    if source is None:
        target = ["-p", "tofu"]
    else:
        (tree / "user.py").write_text(source)
        target = ["--follow-imports=silent", "user.py"]
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", str(CONFIG), *target],
        check=False,
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_user_program_type_checks_strictly(checked_tree: Path) -> None:
    result = mypy(checked_tree, USER_PROGRAM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mistakes_are_caught(checked_tree: Path) -> None:
    result = mypy(checked_tree, MISTAKES)
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, result.stdout
    assert 'variable has type "str"' in errors[0]  # an OpCode is not a str
    assert '"Message | None"' in errors[1]  # poolOnly may give None
    assert '"wait_receive"' in errors[2]  # the timeout is a number of seconds


def test_the_package_itself_type_checks_strictly(checked_tree: Path) -> None:
    result = mypy(checked_tree, None)
    assert result.returncode == 0, result.stdout + result.stderr
