"""The two builds (compiled with mypyc, pure Python) behave the same.

These run in both: `.ci/run` runs the whole suite on the pure (editable)
install and again on a compiled wheel. TOFU_EXPECT_COMPILED=1 (or 0) in the
environment makes the suite fail when the build is not the one expected, so
a compiled run cannot silently test pure Python.

The enum tests guard a trap of compilation: an attribute annotated `int`
stores a plain int once compiled, so an enum member set or decoded there
would come back as an int and `is OpCode.Signal` would be False.
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tofu
from strategies import FrameSpec
from tofu import AmpeStatus, MoreMessagesFlag, OpCode, OriginFlag

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0  # seconds: bounds a failure, never paces a success


def _is_extension(module: object) -> bool:
    return str(getattr(module, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_compiled_says_which_build_runs() -> None:
    import tofu.framing
    import tofu.generated.codec
    import tofu.message

    assert type(tofu.COMPILED) is bool
    assert tofu.COMPILED == _is_extension(tofu.message)
    # all or nothing: never some modules compiled and others not
    assert {_is_extension(m) for m in (tofu.message, tofu.framing, tofu.generated.codec)} == {tofu.COMPILED}
    # message.py takes its pure Python shortcuts (no __init__ per part) only when it is not compiled
    assert tofu.message._PURE is (not tofu.COMPILED)
    expected = os.environ.get("TOFU_EXPECT_COMPILED")
    if expected is not None:
        assert tofu.COMPILED == (expected == "1"), f"TOFU_EXPECT_COMPILED={expected} but tofu.COMPILED={tofu.COMPILED}"


def test_the_source_tree_holds_no_compiled_module() -> None:
    """An editable install runs runtime/ and generated/ themselves: a compiled
    module there would run instead of the .py beside it, stale after an edit."""
    stray = [p for d in ("runtime", "generated") for p in (ROOT / d).rglob("*") if p.suffix in (".so", ".pyd", ".c")]
    assert not stray
    if Path(tofu.__file__).resolve().parent == ROOT / "runtime":
        assert not tofu.COMPILED


def _assert_members(pf: tofu.ProtoFields, op: OpCode, origin: OriginFlag, more: MoreMessagesFlag) -> None:
    assert type(pf.op_code) is OpCode and pf.op_code is op
    assert type(pf.origin) is OriginFlag and pf.origin is origin
    assert type(pf.more) is MoreMessagesFlag and pf.more is more


def test_enum_members_survive_set_and_copy() -> None:
    msg = tofu.Message(OpCode.Signal)
    _assert_members(msg.bhdr.proto, OpCode.Signal, OriginFlag.application, MoreMessagesFlag.last)
    p = msg.bhdr.proto
    p.op_code, p.origin, p.more = OpCode.ByeRequest, OriginFlag.engine, MoreMessagesFlag.more
    _assert_members(p, OpCode.ByeRequest, OriginFlag.engine, MoreMessagesFlag.more)
    msg.bhdr.status = AmpeStatus.wrong_address
    assert msg.bhdr.status is AmpeStatus.wrong_address
    for m in (msg.copy(), msg._take()):
        _assert_members(m.bhdr.proto, OpCode.ByeRequest, OriginFlag.engine, MoreMessagesFlag.more)
        assert m.bhdr.status is AmpeStatus.wrong_address
    pf = tofu.ProtoFields.from_byte(tofu.ProtoFields(OpCode.Response, OriginFlag.engine).to_byte())
    _assert_members(pf, OpCode.Response, OriginFlag.engine, MoreMessagesFlag.last)


def test_an_invalid_op_code_stays_a_plain_int() -> None:
    pf = tofu.ProtoFields.from_byte(12)
    assert pf.op_code == 12 and not pf.is_valid()
    pf.op_code = 13  # type: ignore[assignment]
    assert pf.op_code == 13 and pf.to_byte() & 0x0F == 13


@pytest.mark.parametrize("recycled", [False, True], ids=["new", "recycled"])
def test_decoded_fields_are_enum_members(recycled: bool) -> None:
    spec = FrameSpec(op_code=int(OpCode.Signal), origin=1, more=1, status=5, channel_number=3, message_id=7)
    decoder = tofu.FrameDecoder(recycle=(lambda: tofu.Message()) if recycled else None)
    (msg,) = decoder.feed(tofu.encode(spec.message()))
    _assert_members(msg.bhdr.proto, OpCode.Signal, OriginFlag.engine, MoreMessagesFlag.more)
    assert msg.bhdr.status == 5 and msg.bhdr.channel_number == 3 and msg.bhdr.message_id == 7


def test_what_the_engine_sets_and_delivers_are_enum_members(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    server, client = ampe.create(), ampe.create()
    server.update_receiver()
    update = server.wait_receive(TIMEOUT)
    assert update is not None and update.bhdr.status is AmpeStatus.receiver_update

    server.post(tofu.TCPServerAddress("127.0.0.1", 0).format(ampe.get()))
    welcome = server.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.status == 0
    _assert_members(welcome.bhdr.proto, OpCode.WelcomeResponse, OriginFlag.engine, MoreMessagesFlag.last)
    port = int(dict(welcome.thdrs)[tofu.LISTEN_ON_HEADER].rsplit("|", 1)[1])
    client.post(tofu.TCPClientAddress("127.0.0.1", port).format(ampe.get()))
    hello = server.wait_receive(TIMEOUT)
    assert hello is not None
    _assert_members(hello.bhdr.proto, OpCode.HelloRequest, OriginFlag.application, MoreMessagesFlag.last)

    # a connection refused: the engine gives the HelloRequest back with its status
    free = tofu.find_free_tcp_port()
    client.post(tofu.TCPClientAddress("127.0.0.1", free).format(ampe.get()))
    back = client.wait_receive(TIMEOUT)
    assert back is not None
    assert type(back.bhdr.status) is AmpeStatus and back.bhdr.status is AmpeStatus.connect_failed
    _assert_members(back.bhdr.proto, OpCode.HelloRequest, OriginFlag.engine, MoreMessagesFlag.last)


def test_a_posted_message_is_emptied_in_both_builds(rtr: tofu.Reactor) -> None:
    ampe = rtr.ampe()
    group = ampe.create()
    msg = tofu.TCPServerAddress("127.0.0.1", 0).format(ampe.get())
    group.post(msg)
    assert msg.is_posted
    for part in ("bhdr", "thdrs", "body"):
        with pytest.raises(tofu.NotAllowed):
            getattr(msg, part)
    ampe.put(msg)  # a no-op
    welcome = group.wait_receive(TIMEOUT)
    assert welcome is not None and welcome.bhdr.proto.op_code is OpCode.WelcomeResponse


def test_a_compiled_message_is_not_tracked_by_the_cyclic_gc() -> None:
    """mypyc_attr(acyclic=True) (message.py): no part of a compiled message
    is GC-tracked, so making messages never triggers a collection and none
    visits the pool's; pure Python has no such switch."""
    import gc

    msg = tofu.Message(OpCode.Signal)
    parts = (msg, msg.bhdr, msg.bhdr.proto, msg.thdrs, msg.body, msg.bhdr.copy(), msg.copy())
    assert [gc.is_tracked(part) for part in parts] == [not tofu.COMPILED] * len(parts)


def _setup_py(*args: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "setup.py", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )
    return proc.stdout + proc.stderr


def test_the_build_says_pure_python_when_asked_or_editable() -> None:
    assert "tofu build: pure Python (TOFU_PURE is set)" in _setup_py("bdist_wheel", "--help", TOFU_PURE="1")
    out = _setup_py("editable_wheel", "--help")
    assert "tofu build: pure Python (an editable install is always pure Python" in out


def test_a_failed_compile_leaves_a_pure_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All or nothing: when the C does not compile (no compiler, no headers, a
    compiler error), no extension is left and the build says pure Python."""
    import importlib.util

    from setuptools import Distribution, Extension

    spec = importlib.util.spec_from_file_location("tofu_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    setup_py = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_py)  # defines, does not build: main() runs only as __main__

    (tmp_path / "good.c").write_text("int good(void) { return 1; }\n")
    (tmp_path / "bad.c").write_text("this is not C\n")
    exts = [Extension("good", [str(tmp_path / "good.c")]), Extension("bad", [str(tmp_path / "bad.c")])]
    dist = Distribution({"name": "t", "ext_modules": exts})
    cmd = setup_py._AllOrNothing(dist)
    cmd.build_lib = str(tmp_path / "lib")
    cmd.build_temp = str(tmp_path / "temp")
    cmd.ensure_finalized()
    cmd.run()
    assert cmd.extensions == [] and not dist.ext_modules
    assert not list(tmp_path.rglob("*.so"))  # not even the one that compiled
    assert "tofu build: pure Python (compiling the C failed" in capsys.readouterr().err
