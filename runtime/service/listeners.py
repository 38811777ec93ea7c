"""A server's listeners: a WelcomeRequest per address, their answers (the
address each really listens on, or why it cannot), and their end."""

from __future__ import annotations

import logging

from ..addresses import Address, parse_address_value
from ..ampe import Ampe
from ..generated import LISTEN_ON_HEADER, STATUS_TO_ERROR, AmpeError, AmpeStatus, OpCode, UnknownError, raw_to_status
from ..groups import ChannelGroup
from ..message import Message
from .frames import next_id
from .urls import url_of

__all__ = ["Listeners"]

log = logging.getLogger("tofu.server")


class Listeners:
    """The listeners of one server, on its channel group. `urls` are their
    addresses as URLs (the real ones once answered: port 0 replaced), `open`
    the listening ones (channel -> URL), `error` the first failure, `ready`
    True once every address was answered."""

    def __init__(self, ampe: Ampe, group: ChannelGroup, addresses: list[Address]) -> None:
        self._ampe, self._group, self._addresses = ampe, group, addresses
        self.urls: list[str] = [url_of(a) for a in addresses]
        self.open: dict[int, str] = {}
        self.error: AmpeError | None = None
        self.ready = False
        self._asked: dict[int, int] = {}  # a WelcomeRequest's channel -> index in `addresses`
        self._first_mids: dict[int, int] = {}  # a listener's channel -> its WelcomeRequest's id

    def listen(self) -> None:
        """Post a WelcomeRequest per address (answered() takes the answers)."""
        for index, address in enumerate(self._addresses):
            msg = self._ampe.get()
            address.format(msg)
            mid = msg.bhdr.message_id = next_id()
            ch = self._group.post(msg).channel_number
            self._asked[ch] = index
            self._first_mids[ch] = mid

    def answered(self, msg: Message, ch: int) -> bool:
        """Take the WelcomeResponse `msg` if it answers one of ours (True; the
        message stays the caller's). `ready` is True after the last one."""
        index = self._asked.pop(ch, None)
        if index is None:
            return False
        status = raw_to_status(msg.bhdr.status)
        address = self._addresses[index]
        if status is AmpeStatus.success:
            value = msg.thdrs.get(LISTEN_ON_HEADER)
            url = url_of(parse_address_value(value, server=True)) if value else url_of(address)
            self.urls[index] = url
            self.open[ch] = url
            log.info("listening on %s", url)
        elif self.error is None:
            error = STATUS_TO_ERROR.get(status, UnknownError)
            self.error = error(f"cannot listen on {url_of(address)}: {status.name} ({status.meaning})")
        self.ready = not self._asked
        return True

    def ended(self, ch: int, mid: int, reason: AmpeStatus, detail: str | None, expected: bool) -> bool:
        """Whether the channel_closed of `ch` (carrying `mid`) is a listener's
        end (True), logged unless `expected` (the server is stopping)."""
        if ch not in self.open or self._first_mids.get(ch) != mid:
            return False
        url = self.open.pop(ch)
        del self._first_mids[ch]
        if not expected:
            log.error("listener %s closed: %s%s", url, reason.name, f" ({detail})" if detail else "")
        return True

    def close(self) -> None:
        """Close every listener (ByeSignal); their ends come as channel_closed."""
        for ch in list(self.open):
            msg = self._ampe.get()
            msg.bhdr.proto.op_code = OpCode.ByeSignal
            msg.bhdr.channel_number = ch
            try:
                self._group.post(msg)
            except AmpeError:
                self._ampe.put(msg)
