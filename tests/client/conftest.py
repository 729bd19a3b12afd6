"""The fake cell fixture (tests/client/fakes.py) for the client tests."""

from tests.client.fakes import FakeCell, cell

__all__ = ["FakeCell", "cell"]
