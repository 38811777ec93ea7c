"""Text headers as the service layer shows them (a read-only mapping) and
takes them (a mapping or a list of pairs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final, TypeAlias

from ..message import TextHeaders

__all__ = ["EMPTY_HEADERS", "Headers", "HeadersLike", "pairs_of"]

HeadersLike: TypeAlias = Mapping[str, str | int] | Iterable[tuple[str, str | int]] | None
"""What the service layer takes as text headers: a mapping of name to value,
an iterable of (name, value) pairs (a name may repeat), or None for none."""


class Headers(Mapping[str, str]):
    """Text headers, read-only. `headers["x-id"]` and `headers.get("x-id")`
    give the first value of a name (names are case-sensitive, as on the wire);
    `get_all(name)` every value of it; `pairs` all (name, value) pairs in the
    order they came, repeated names included. Iterating gives each name once."""

    __slots__ = ("_first", "_pairs")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs: tuple[tuple[str, str], ...] = tuple(pairs)
        first: dict[str, str] = {}
        for name, value in self._pairs:
            first.setdefault(name, value)
        self._first = first

    @classmethod
    def of(cls, thdrs: TextHeaders) -> Headers:
        """The headers of a received message (EMPTY_HEADERS when it has none)."""
        return cls(thdrs) if thdrs else EMPTY_HEADERS

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every (name, value) pair, in order, repeated names included."""
        return self._pairs

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in order (an empty list when there is none)."""
        return [v for n, v in self._pairs if n == name]

    def __getitem__(self, name: str) -> str:
        return self._first[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, name: object) -> bool:
        return name in self._first

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


EMPTY_HEADERS: Final = Headers()


def pairs_of(headers: HeadersLike) -> list[tuple[str, str | int]]:
    """`headers` as a list of (name, value) pairs; Headers keep their repeated names."""
    if headers is None:
        return []
    if isinstance(headers, Headers):
        return list(headers.pairs)
    if isinstance(headers, Mapping):
        return list(headers.items())
    out = []
    for pair in headers:
        name, value = pair
        out.append((name, value))
    return out
