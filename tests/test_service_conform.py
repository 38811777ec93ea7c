"""`tofu conform` passes against a tofu.Server echo, over TCP, UDS and TLS:
the service layer speaks the protocol as any tofu peer must (the hello, every
frame size and cut, `more` streams, Bye, bad input and limits).

The echo is what `tofu conform` expects of its target: each Request frame
back as a Response frame with the same headers, body and `more` flag, each
Signal back as a Signal, in the order they came (ordered=True)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tofu
from tofu.conform import Level, Outcome, catalogue, parse_target, run_cases
from tofu.conform.probe import TLSOptions

from tls_support import Pems

TIMEOUT = 10.0  # only bounds a failure
IDLE = 0.3


def echo(request: tofu.Request) -> list[tuple[tofu.Headers, bytes]]:
    return list(request.frames)  # one Response frame per Request frame, `more` on all but the last


def echo_signal(request: tofu.Request) -> None:
    request.signal(request.body, request.headers)


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Pems:
    return Pems(tmp_path_factory.mktemp("pems"))


@pytest.fixture(scope="module")
def served(pems: Pems) -> Iterator[dict[str, str]]:
    """One tofu.Server echo on TCP, UDS and TLS: {"tcp": url, "uds": url, "tls": url}."""
    urls = ["tcp://127.0.0.1:0", f"uds://{tofu.temp_uds_path()}", "tls://127.0.0.1:0"]
    with tofu.Server(urls, echo, ordered=True, on_signal=echo_signal, cert=pems.server) as server:
        yield {url.split(":", 1)[0]: url for url in server.urls}


@pytest.mark.parametrize("scheme", ["tcp", "uds", "tls"])
def test_a_tofu_server_echo_passes_every_must_and_should_case(
    served: dict[str, str], scheme: str, pems: Pems
) -> None:
    target = parse_target(served[scheme], TLSOptions(ca=pems.ca_pem) if scheme == "tls" else None)
    results = run_cases(catalogue(), target, TIMEOUT, IDLE)
    assert len(results) == len(catalogue())
    assert {r.case.id: r.detail for r in results if r.outcome is Outcome.failed} == {}
    assert {r.outcome for r in results if r.case.level is Level.info} == {Outcome.info}
    signal_cases = [r for r in results if "Signal (the spec's echo" in r.case.title]
    assert signal_cases and all(r.detail == "echoed as a Signal" for r in signal_cases)


def test_the_urls_are_the_real_addresses(served: dict[str, str]) -> None:
    assert served["tcp"].startswith("tcp://127.0.0.1:") and not served["tcp"].endswith(":0")
    assert served["tls"].startswith("tls://127.0.0.1:") and not served["tls"].endswith(":0")
    assert Path(served["uds"].removeprefix("uds://")).exists()
