"""Atomic, durable writes on a real filesystem."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

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


def test_a_partial_left_by_a_zombie_is_removed_and_one_of_a_live_writer_kept(tmp_path):
    """A killed writer not yet reaped (an orphan under an init that does not reap)
    is a zombie: its pid answers kill(0), but it writes nothing, so its temporary goes."""
    target = tmp_path / "database.json"
    target.write_bytes(b"{}")
    zombie = subprocess.Popen(["true"])  # exits at once; not waited for, so a zombie
    live = subprocess.Popen(["sleep", "30"])
    try:
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z":
            time.sleep(0.01)
        left = target.with_name(f".{target.name}{durable.TMP_MARK}{zombie.pid}-0a0b0c0d")
        kept = target.with_name(f".{target.name}{durable.TMP_MARK}{live.pid}-0a0b0c0d")
        left.write_bytes(b"half")
        kept.write_bytes(b"being written")
        assert durable.remove_stale_partials(target) == 1
        assert not left.exists() and kept.exists()
    finally:
        live.kill()
        live.wait()
        zombie.wait()
