"""The print-spool simulation played by `tofu demo`: a spool server and a RIP worker."""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass

from .. import (
    Address,
    Ampe,
    AmpeStatus,
    ChannelGroup,
    Message,
    MoreMessagesFlag,
    OpCode,
)
from ._transcript import Transcript
from .console import CLIError
from .session import status_text

log = logging.getLogger("tofu.cli")

_TICKETS = {"PS": "PPD", "PDF": "JDF"}


def _ticket(job: int, pdl: str, pages: int) -> tuple[str, bytes]:
    kind = _TICKETS[pdl]
    if kind == "JDF":
        body = (
            f'<?xml version="1.0"?>\n<JDF Type="Combined" JobID="{job}" Status="Waiting">\n'
            f'  <ResourcePool><RunList Pages="0~{pages - 1}"/><Media Dimension="595 842"/></ResourcePool>\n</JDF>\n'
        )
    else:
        body = f'*PPD-Adobe: "4.3"\n*% job {job}\n*DefaultPageSize: A4\n*Pages: {pages}\n*Duplex: None\n'
    return kind, body.encode()


def _page(pdl: str, job: int, page: int) -> bytes:
    # Fake but plausible page descriptions, with some image data to give them weight.
    image = zlib.compress(bytes((page * 7 + i * 13) & 0xFF for i in range(3000)), 1).hex()
    if pdl == "PS":
        return (
            f"%%Page: {page} {page}\n/Helvetica findfont 24 scalefont setfont\n"
            f"72 720 moveto (job {job}, page {page}) show\n<{image}>\nshowpage\n"
        ).encode()
    return (f"{page + 2} 0 obj << /Type /Page /Parent 2 0 R /Contents <{image}> >> endobj\n").encode()


def _count_pages(pdl: str, data: bytes) -> int:
    return data.count(b"showpage") if pdl == "PS" else data.count(b"/Type /Page ")


@dataclass
class Job:
    job_id: int
    pdl: str
    pages: int
    channel: int = 0
    pdl_bytes: int = 0
    requests: int = 0
    progress_signals: int = 0
    final: str = ""
    sent_at: float = 0.0
    done_at: float = 0.0


class Spool:
    """The spool server: waits for RIP workers, sends each a job as a multi-request."""

    def __init__(self, ampe: Ampe, group: ChannelGroup, tr: Transcript, jobs: list[Job], pages_per_chunk: int) -> None:
        self.ampe, self.group, self.tr = ampe, group, tr
        self.waiting = list(jobs)
        self.by_channel: dict[int, Job] = {}
        self.pages_per_chunk = pages_per_chunk
        self.finished: list[Job] = []
        self.listener = 0
        self.total = len(jobs)

    def run(self, deadline: float) -> None:
        group = self.group
        while len(self.finished) < self.total:
            remaining = deadline - time.monotonic()
            msg = group.wait_receive(remaining) if remaining > 0 else None
            if msg is None:
                raise CLIError("demo: the spool server timed out")
            try:
                self._handle(msg)
            finally:
                self.ampe.put(msg)
        bye = Message(OpCode.ByeSignal)  # close the listener
        bye.bhdr.channel_number = self.listener
        group.post(bye)

    def _handle(self, msg: Message) -> None:
        bh = msg.bhdr
        number = bh.channel_number
        job: Job | None
        if msg.is_from_engine():
            self.tr.message("tofu", "spool", msg)
            if bh.status == AmpeStatus.channel_closed and number in self.by_channel:
                job = self.by_channel.pop(number)
                if not job.final:
                    raise CLIError(f"demo: the worker of job {job.job_id} went away")
                self.finished.append(job)
            elif bh.status not in (AmpeStatus.pool_empty, AmpeStatus.channel_closed):
                raise CLIError(f"demo: spool got {bh.proto.op_code.name} back: {status_text(bh.status)}")
            return
        op = bh.proto.op_code
        if op == OpCode.ByeRequest:
            # Narrated here, where the ByeRequest arrives, rather than where R sends it: every
            # Progress Signal sent before it has been printed by now, so the transcript reads in order.
            self.tr.narrate("R", f"job {bh.message_id} done: ByeRequest with the final status instead of a Response")
        self.tr.message("rip", "spool", msg)
        if op == OpCode.HelloRequest:
            pdl = msg.thdrs.get("PDL")
            job = next((j for j in self.waiting if j.pdl == pdl), None)
            if job is None:
                self.tr.narrate("S", f"no {pdl} job for this worker: rejecting it with ByeSignal")
                bye = Message(OpCode.ByeSignal)
                bye.bhdr.channel_number = number
                self.group.post(bye)
                return
            self.waiting.remove(job)
            job.channel = number
            self.by_channel[number] = job
            self.tr.narrate(
                "S", f"no HelloResponse: job {job.job_id} goes out at once, JobTicket first, then {pdl} data"
            )
            self._send_job(job)
        elif op == OpCode.Signal:
            job = self.by_channel.get(number)
            if job is not None and bh.message_id == job.job_id:
                job.progress_signals += 1
        elif op == OpCode.ByeRequest:
            job = self.by_channel.get(number)
            if job is not None:
                job.final = f"{msg.thdrs.get('JobStatus', '?')} {msg.thdrs.get('Progress', '')}".strip()
                job.done_at = self.tr.elapsed_ms()
            reply = msg.copy()
            reply.bhdr.proto.op_code = OpCode.ByeResponse
            reply.body.clear()
            self.group.post(reply)

    def _send_job(self, job: Job) -> None:
        post = self.group.post
        kind, ticket = _ticket(job.job_id, job.pdl, job.pages)
        job.sent_at = self.tr.elapsed_ms()
        first = Message(OpCode.Request)
        first.bhdr.channel_number = job.channel
        first.bhdr.message_id = job.job_id
        first.bhdr.proto.more = MoreMessagesFlag.more
        first.thdrs.append("JobTicket", kind)
        first.body.append(ticket)
        post(first)
        job.requests += 1
        page = 1
        while page <= job.pages:
            last_page = min(page + self.pages_per_chunk - 1, job.pages)
            chunk = Message(OpCode.Request)
            chunk.bhdr.channel_number = job.channel
            chunk.bhdr.message_id = job.job_id
            chunk.thdrs.append("PDL", job.pdl)
            for n in range(page, last_page + 1):
                chunk.body.append(_page(job.pdl, job.job_id, n))
            if last_page < job.pages:
                chunk.bhdr.proto.more = MoreMessagesFlag.more
            job.pdl_bytes += len(chunk.body)
            post(chunk)
            job.requests += 1
            page = last_page + 1


class RipWorker:
    """The RIP worker: connects once per job it can take, rasterizes, reports progress."""

    def __init__(self, ampe: Ampe, group: ChannelGroup, tr: Transcript, address: Address, pdl: str) -> None:
        self.ampe, self.group, self.tr = ampe, group, tr
        self.address, self.pdl = address, pdl
        self.open: set[int] = set()
        self.pages_done: dict[int, int] = {}
        self.ticket_seen: set[int] = set()

    def connect(self) -> None:
        hello = Message()
        self.address.format(hello)
        hello.thdrs.append("PDL", self.pdl)
        self.open.add(self.group.post(hello).channel_number)

    def run(self, deadline: float) -> None:
        while self.open:
            remaining = deadline - time.monotonic()
            msg = self.group.wait_receive(remaining) if remaining > 0 else None
            if msg is None:
                raise CLIError("demo: the RIP worker timed out")
            try:
                self._handle(msg)
            finally:
                self.ampe.put(msg)

    def _handle(self, msg: Message) -> None:
        bh = msg.bhdr
        number = bh.channel_number
        if msg.is_from_engine():
            self.tr.message("tofu", "rip", msg)
            if bh.status == AmpeStatus.channel_closed and bh.proto.op_code == OpCode.Signal:
                self.open.discard(number)
            elif bh.status not in (AmpeStatus.pool_empty, AmpeStatus.channel_closed):
                raise CLIError(f"demo: the worker got {bh.proto.op_code.name} back: {status_text(bh.status)}")
            return
        self.tr.message("spool", "rip", msg)
        op = bh.proto.op_code
        job = bh.message_id
        if op == OpCode.Request:
            ticket = msg.thdrs.get("JobTicket")
            if ticket is not None:
                self.ticket_seen.add(job)
                self.pages_done[job] = 0
                return
            if job not in self.ticket_seen:
                raise CLIError(f"demo: job {job} data came before its JobTicket")
            if msg.thdrs.get("PDL") != self.pdl:
                raise CLIError(f"demo: job {job} is {msg.thdrs.get('PDL')}, this worker takes {self.pdl}")
            first = self.pages_done[job] + 1
            last = self.pages_done[job] + _count_pages(self.pdl, bytes(msg.body))
            self.pages_done[job] = last
            progress = Message(OpCode.Signal)
            progress.bhdr.channel_number = number
            progress.bhdr.message_id = job
            progress.thdrs.append("Progress", f"[{first}:{last}]")
            self.group.post(progress)
            if not msg.has_more():
                bye = Message(OpCode.ByeRequest)
                bye.bhdr.channel_number = number
                bye.bhdr.message_id = job
                bye.thdrs.append("Progress", f"[1:{last}]")
                bye.thdrs.append("JobStatus", "completed")
                bye.body.append(f"{last} page(s) rasterized")
                self.group.post(bye)
