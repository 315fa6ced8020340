"""Fixtures shared by every test directory."""

from tests.support.netns import netns_lab

__all__ = ["netns_lab"]
