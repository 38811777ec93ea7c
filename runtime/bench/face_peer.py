"""The service layer's side of the `pipeline-client` and `pipeline-aclient`
workloads: requests through tofu.Client.request (64 threads) or
tofu.aio.Client.request (64 tasks), 64 outstanding, against the same echo
server as the engine's own `pipeline` workload (tofu_peer), so that the two
figures side by side show what the layer costs."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

from ._process import BenchError, ParentLink, peak_rss
from .tls_certs import tls_options


def _url(spec: dict[str, Any]) -> str:
    a = spec["address"]
    return f"{a[0]}://{a[1]}:{a[2]}" if a[0] in ("tcp", "tls") else f"uds://{a[1]}"


def face_client(spec: dict[str, Any], chan: ParentLink) -> dict[str, Any]:
    """Run the workload; return the client's result (seconds for `count` replies after the warm-up)."""
    import tofu

    options = tofu.Options(**spec.get("tofu_options", {}), **tls_options(spec))
    payload = b"x" * spec["size"]
    total = spec["warmup"] + spec["count"]
    window = spec["window"]
    timeout = float(spec["step_timeout"])
    if spec["face"] == "aclient":
        t0, t1 = asyncio.run(_with_tasks(tofu, _url(spec), options, payload, spec["warmup"], total, window, timeout))
    else:
        t0, t1 = _with_threads(tofu, _url(spec), options, payload, spec["warmup"], total, window, timeout)
    return {"seconds": t1 - t0, "rss_peak": peak_rss(), "clean_close": True}


def _with_threads(
    tofu: Any, url: str, options: Any, payload: bytes, warmup: int, total: int, window: int, timeout: float
) -> tuple[float, float]:
    tickets = itertools.count(1).__next__  # atomic: each request takes the next one
    started: list[float] = []
    failures: list[BaseException] = []
    with tofu.connect(url, options=options, max_in_flight=window) as client:

        def work() -> None:
            request = client.request
            try:
                while (n := tickets()) <= total:
                    if request(payload, None, timeout).body != payload:
                        raise BenchError("tofu.Client: a reply with another body")
                    if n == warmup:
                        started.append(time.perf_counter())
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, name=f"bench-{i}") for i in range(window)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = time.perf_counter()
    if failures:
        raise BenchError(f"tofu.Client: {type(failures[0]).__name__}: {failures[0]}")
    return started[0], end


async def _with_tasks(
    tofu: Any, url: str, options: Any, payload: bytes, warmup: int, total: int, window: int, timeout: float
) -> tuple[float, float]:
    import tofu.aio

    tickets = itertools.count(1).__next__
    started: list[float] = []
    async with await tofu.aio.connect(url, options=options, max_in_flight=window) as client:

        async def work() -> None:
            request = client.request
            while (n := tickets()) <= total:
                if (await request(payload, None, timeout)).body != payload:
                    raise BenchError("tofu.aio.Client: a reply with another body")
                if n == warmup:
                    started.append(time.perf_counter())

        await asyncio.gather(*(work() for _ in range(window)))
        end = time.perf_counter()
    return started[0], end
