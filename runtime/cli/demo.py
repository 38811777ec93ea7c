"""`tofu demo`: the print-server conversation over loopback, as a transcript."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable

from .. import (
    Address,
    ShutdownStarted,
    TCPServerAddress,
    UDSServerAddress,
    parse_url,
)
from ._signals import signals_to_main_thread
from ._transcript import Transcript
from .console import EXIT_OK, terminal_width
from .printspool import Job, RipWorker, Spool
from .session import listen, new_reactor

log = logging.getLogger("tofu.cli")

_DIALOGUE = """\
The print-server conversation from the reference's README, played over loopback:
  S (spool server) listens; R (RIP worker) connects with a HelloRequest whose PDL
  header says what it can rasterize (PS or PDF). S answers with no HelloResponse:
  it sends the job as a multi-request, every frame with the job id as message id:
  a JobTicket request first (PPD for PS, JDF for PDF), then the PDL data, all but
  the last with the `more` flag. R reports progress with Signals carrying
  `Progress:[N:M]` (the pages just rasterized) and finishes with a ByeRequest
  carrying the final status; S answers ByeResponse and the channel closes.
  `ch` is the receiver's channel number: numbers are local to each engine."""


def run(args: argparse.Namespace) -> int:
    """`tofu demo`: the print-server conversation over loopback, as a transcript."""
    tr = Transcript(sys.stdout)
    listen_addr: Address
    if args.uds:
        from .. import temp_uds_path

        listen_addr = UDSServerAddress(temp_uds_path("tofu-demo"))
    else:
        listen_addr = TCPServerAddress("127.0.0.1", 0)
    jobs = [Job(job_id=1001 + i, pdl=args.pdl, pages=args.pages) for i in range(args.jobs)]
    print(_DIALOGUE, flush=True)
    print(flush=True)
    tr.columns()
    with new_reactor() as spool_rtr, new_reactor() as rip_rtr:
        spool_ampe, rip_ampe = spool_rtr.ampe(), rip_rtr.ampe()
        spool_group, rip_group = spool_ampe.create(), rip_ampe.create()
        spool = Spool(spool_ampe, spool_group, tr, jobs, args.pages_per_chunk)
        tr.narrate("S", "I don't know the addresses of the workers, so you should connect to me.")
        spool.listener, url = listen(spool_ampe, spool_group, listen_addr)
        tr.say(f"spool listening on {url} (listener channel {spool.listener})")
        connect = parse_url(url, server=False)
        rip = RipWorker(rip_ampe, rip_group, tr, connect, args.pdl)
        tr.narrate("R", f"I'll send a HelloRequest; its PDL header says {args.pdl}.")
        for _ in range(args.jobs):
            rip.connect()  # one channel per job: "working one job per channel looks cleaner"

        deadline = time.monotonic() + args.timeout
        errors: list[BaseException] = []

        def guarded(fn: Callable[[float], None]) -> Callable[[], None]:
            def call() -> None:
                try:
                    fn(deadline)
                except ShutdownStarted:
                    pass
                except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
                    errors.append(exc)
                    spool_rtr.destroy()
                    rip_rtr.destroy()

            return call

        threads = [
            threading.Thread(target=guarded(spool.run), name="demo-spool", daemon=True),
            threading.Thread(target=guarded(rip.run), name="demo-rip", daemon=True),
        ]
        with signals_to_main_thread():
            for t in threads:
                t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins keep Ctrl-C responsive
        if errors:
            raise errors[0]

    _demo_summary(jobs, args.pdl, tr.elapsed_ms())
    return EXIT_OK


def _demo_summary(jobs: list[Job], pdl: str, total_ms: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"print jobs ({pdl}), {total_ms:.1f} ms in all", title_justify="left")
    for col in ("job (message id)", "channel", "requests", "PDL bytes", "progress signals", "final status", "ms"):
        table.add_column(col, justify="left" if col == "final status" else "right")
    for job in jobs:
        table.add_row(
            str(job.job_id),
            str(job.channel),
            str(job.requests),
            str(job.pdl_bytes),
            str(job.progress_signals),
            job.final,
            f"{job.done_at - job.sent_at:.1f}",
        )
    print(flush=True)
    Console(file=sys.stdout, highlight=False, width=max(100, terminal_width())).print(table)
    sys.stdout.flush()
