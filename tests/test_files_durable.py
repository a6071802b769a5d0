"""Atomic, durable writes on a real filesystem."""

from __future__ import annotations

import os
import stat

import pytest

from migrator.files import durable


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    target = tmp_path / "database.json"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    like = os.stat(target)
    size, digest = durable.atomic_write(target, [b"new ", b"content"], like=like)
    assert target.read_bytes() == b"new content" and size == 11
    assert digest == durable.sha256_file(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["database.json"]  # no temp left behind


def test_failed_write_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "database.json"
    target.write_bytes(b"old")

    def chunks():
        yield b"partial"
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError):
        durable.atomic_write(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["database.json"]


def test_link_or_copy_same_bytes_and_mtime(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"x" * 1000)
    os.utime(src, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    how = durable.link_or_copy(src, tmp_path / "b")
    assert how in ("link", "copy")
    assert (tmp_path / "b").read_bytes() == src.read_bytes()
    assert os.stat(tmp_path / "b").st_mtime_ns == os.stat(src).st_mtime_ns


def test_durable_copy_keeps_private_mode(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"secret")
    os.chmod(src, 0o600)
    durable.durable_copy(src, tmp_path / "b")
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600
