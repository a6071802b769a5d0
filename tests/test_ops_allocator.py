"""The malloc settings that keep a long run's memory flat (benchmarks/ measures the effect)."""

from __future__ import annotations

import platform

import pytest

from migrator.ops import allocator


def test_the_settings_take_effect_on_glibc():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only (elsewhere tune() does nothing)")
    assert allocator.tune() is True
    allocator.trim()  # returns nothing; must not fail
