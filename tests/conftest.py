"""Fixtures shared by the engine tests."""

from collections.abc import Iterator

import pytest
import tofu


@pytest.fixture
def rtr() -> Iterator[tofu.Reactor]:
    """An engine with default options, destroyed after the test."""
    with tofu.Reactor() as reactor:
        yield reactor
