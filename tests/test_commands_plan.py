"""`migrate plan` streams: each database is passed on as it is settled, and memory holds the
totals, not every database (tests/test_commands.py has plan's report itself)."""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from helpers import API_KEY, Cli
from migrator import api
from migrator.apps import appconfig
from migrator.commands.plan import _Tally, plan
from migrator.files import durable
from migrator.pipeline.scan import BAD, MIGRATE, SKIP, Found, scan
from migrator.testing.appstores import build_lightrag_workdir
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM

TOTAL_KEYS = [
    "databases",
    "to_migrate",
    "skipped",
    "bad",
    "records",
    "chars",
    "tokens",
    "tokens_exact",
    "by_dim",
    "by_application",
    "made_by_other_model",
    "same_dim_other_model",
    "model_unknown_at_target_dim",
    "staging_bytes",
    "backup_bytes",
]


@pytest.fixture
def mixed_tree(tmp_path) -> Path:
    """DVD files to migrate, two already at the 8b preset's 4096 dims (recording no model),
    a corrupt and an empty file, and a LightRAG working directory (settings by directory)."""
    root = tmp_path / "stores"
    build_dvd_tree(root / "old", 4, clips=(2, 5), seed=1)
    build_dvd_tree(root / "at_target", 2, clips=(2, 4), seed=2, dim=4096)
    build_dvd_tree(root / "more_old", 2, clips=(2, 5), seed=3)
    for name, raw in (("broken", b'{"embedding_dim": 3072, "data": ['), ("empty", b"")):
        (root / name).mkdir()
        (root / name / "database.json").write_bytes(raw)
    build_lightrag_workdir(root / "rag", workspace="team", n_docs=2)
    return root


@pytest.fixture
def fixed_free(monkeypatch):
    """Free space as a constant: two plans (or the CLI and the library) report the same disk."""
    monkeypatch.setattr(durable, "free_bytes", lambda where: 10**12)


def _settings(root: Path, **kw) -> api.Settings:
    return api.Settings(roots=[str(root)], model="8b", **kw)


def _streamed(settings: api.Settings, **kw) -> tuple[dict, list[dict]]:
    got: list[dict] = []
    report = plan(settings, databases=got.append, **kw)
    return report, got


def _old_totals(found: list[Found], model: str, target: int) -> dict:
    """Totals as plan computed them from the list of every database (before it streamed)."""
    todo = [f for f in found if f.status == MIGRATE]
    exact = bool(todo) and all(f.tokens is not None for f in todo)
    other = [f for f in found if f.made_by is not None and f.made_by.model != model]
    new = [max(f.size + int((f.records * 4 * (target - (f.dim or 0))) * 4 / 3), 0) for f in todo]
    by_dim = Counter(f.dim for f in found if f.dim is not None)
    return {
        "databases": len(found),
        "to_migrate": len(todo),
        "skipped": sum(f.status == SKIP for f in found),
        "bad": sum(f.status == BAD for f in found),
        "records": sum(f.records for f in todo),
        "chars": sum(f.chars for f in todo),
        "tokens": sum(f.tokens or 0 for f in todo) if exact else sum(f.est_tokens() for f in todo),
        "tokens_exact": exact,
        "by_dim": {str(k): v for k, v in sorted(by_dim.items())},
        "by_application": dict(Counter(f.profile or "unknown" for f in found if f.status != BAD)),
        "made_by_other_model": len(other),
        "same_dim_other_model": sum(f.dim == target for f in other),
        "model_unknown_at_target_dim": sum(f.unknown_model for f in found),
        "staging_bytes": sum(new),
        "backup_bytes": sum(f.size for f in todo),
    }


def test_streamed_plan_gives_the_same_databases_and_totals(mixed_tree, fixed_free):
    settings = _settings(mixed_tree)
    whole = plan(settings, probe=False)
    report, got = _streamed(settings, probe=False)
    assert "databases" not in report
    assert got == whole["databases"]  # the same dicts, in the same (scan) order
    assert {**report, "databases": got} == whole
    assert list(report) == [k for k in whole if k != "databases"] and list(whole)[-1] == "databases"
    # a tree with every kind: to migrate, skipped (already at 4096 dims), bad, two applications
    t = report["totals"]
    assert list(t) == TOTAL_KEYS
    assert t["to_migrate"] == 6 + 3 and t["bad"] == 2 and t["skipped"] == 2 and t["databases"] == 13
    assert t["model_unknown_at_target_dim"] == 2 and t["by_dim"] == {"3072": 9, "4096": 2}
    assert t["by_application"] == {"dvd": 6, "lightrag": 3, "unknown": 2}  # skipped: no profile told
    assert {d["status"] for d in got} == {MIGRATE, SKIP, BAD}
    assert [d["path"] for d in got] == [str(f.path) for f in scan([mixed_tree], settings.pattern, 4096)]
    # the totals are those plan added up from the list of every database
    found = list(scan([mixed_tree], settings.pattern, 4096, spec=settings.spec, target_model=report["model"]))
    assert t == _old_totals(found, report["model"], 4096)
    assert [d["needed_bytes"] for d in report["disk"]] == [t["staging_bytes"]]
    assert {c["application"] for c in report["configs"]} >= {"lightrag"}


def test_the_tally_gives_appconfig_what_every_file_would(mixed_tree):
    settings = _settings(mixed_tree)
    tally = _Tally("Qwen/Qwen3-Embedding-8B", 4096)
    pairs = []
    for f in scan([mixed_tree], settings.pattern, 4096, spec=settings.spec):
        pairs.append((f.profile, f.path))
        tally.add(f)
    want = appconfig.by_application(pairs)
    assert set(want) == {"dvd", "lightrag"} and want["lightrag"] and want["dvd"] == []
    assert tally.applications.dirs() == want
    assert sum(len(d) for d in tally.applications.dirs().values()) == 1  # LightRAG's one directory, no DVD


def test_streamed_plan_probes_unknown_models_inline(key_env, tmp_path, fixed_free):
    """At the target dimension, recording no model: probed as each arrives, in scan order."""
    ours, theirs = tmp_path / "a_ours", tmp_path / "b_theirs"
    build_dvd_tree(ours, 2, clips=(4, 8), seed=3, dim=1024, embed_seed="Qwen/Qwen3-Embedding-0.6B")
    build_dvd_tree(theirs, 2, clips=(4, 8), seed=4, dim=1024, embed_seed="some-other-1024-model")
    build_dvd_tree(tmp_path / "c_old", 2, clips=(2, 4), seed=5)
    with FakeVLLM(model="Qwen/Qwen3-Embedding-0.6B", api_key=API_KEY) as srv:
        settings = api.Settings(roots=[str(tmp_path)], model="0.6b", endpoint=srv.base_url)
        whole = plan(settings)
        report, got = _streamed(settings)
    assert got == whole["databases"]
    strip = ("measured_tokens_per_second", "measured_texts", "eta_seconds")  # timed: differs
    assert {k: v for k, v in report["endpoint"].items() if k not in strip} == {
        k: v for k, v in whole["endpoint"].items() if k not in strip
    }
    assert report["totals"] == whole["totals"] and report["disk"] == whole["disk"]
    assert report["configs"] == whole["configs"]
    assert [Path(d["path"]).parent.parent.name for d in got] == ["a_ours"] * 2 + ["b_theirs"] * 2 + ["c_old"] * 2
    assert [d["status"] for d in got] == [SKIP, SKIP, MIGRATE, MIGRATE, MIGRATE, MIGRATE]
    assert all("gives back its stored vectors" in d["reason"] for d in got[:2])
    assert all("not Qwen/Qwen3-Embedding-0.6B's" in d["reason"] for d in got[2:4])
    t = report["totals"]
    assert t["to_migrate"] == 4 and t["model_unknown_at_target_dim"] == 0
    # the two probed into migration have no exact count: the tokens are estimated, as before
    assert t["tokens_exact"] is False and all("tokens" in d for d in got[4:])


def test_plan_holds_one_database_at_a_time(tmp_path):
    """Structural, not timed: while plan runs over 300 databases, the live Found objects stay a
    handful (a plan that kept a list of them would hold ~300 by the end)."""
    root = tmp_path / "videos"
    build_dvd_tree(root, 300, clips=(1, 2), seed=7)
    seen: list[int] = []
    calls = 0

    def sink(db: dict) -> None:
        nonlocal calls
        calls += 1
        if calls % 50 == 0:
            seen.append(sum(isinstance(o, Found) for o in gc.get_objects()))

    report = plan(_settings(root), probe=False, databases=sink)
    assert calls == report["totals"]["databases"] == 300
    assert len(seen) == 6 and max(seen) < 10, seen


def test_cli_plan_json_is_the_reports_document(mixed_tree, fixed_free, tmp_path):
    cli = Cli(None, tmp_path / "state")
    r = cli("plan", "--root", str(mixed_tree), "--model", "8b", "--no-probe", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    want = plan(_settings(mixed_tree), probe=False)
    assert doc == want and list(doc) == list(want) and list(doc)[-1] == "databases"
    assert [list(d) for d in doc["databases"]] == [list(d) for d in want["databases"]]
    assert r.stdout == json.dumps(want, indent=2, default=str) + "\n"  # as printed before it streamed


def test_cli_plan_json_without_databases(tmp_path, fixed_free):
    (tmp_path / "nothing").mkdir()
    cli = Cli(None, tmp_path / "state")
    r = cli("plan", "--root", str(tmp_path / "nothing"), "--model", "8b", "--no-probe", "--json")
    assert r.exit_code == 0, r.output
    want = plan(_settings(tmp_path / "nothing"), probe=False)
    assert want["databases"] == [] and r.stdout == json.dumps(want, indent=2, default=str) + "\n"


def test_cli_plan_lists_bad_and_skipped_databases(mixed_tree, tmp_path):
    cli = Cli(None, tmp_path / "state")
    r = cli("plan", "--root", str(mixed_tree), "--model", "8b", "--no-probe")
    assert r.exit_code == 0, r.output
    dbs = plan(_settings(mixed_tree), probe=False)["databases"]
    want = [
        f"  {d['status'].upper():7} {d['path']}: {d['reason']}" for d in dbs if d["status"] != "migrate" or d["reason"]
    ]
    listed = [line for line in r.stdout.splitlines() if line.startswith(("  BAD ", "  SKIP ", "  MIGRATE "))]
    assert listed == want
    assert sum(line.startswith("  BAD ") for line in listed) == 2
    assert sum(line.startswith("  SKIP ") for line in listed) == 2
    assert f"{mixed_tree / 'broken' / 'database.json'}:" in r.stdout
    assert (
        "Databases under" in r.stdout and "To migrate to Qwen/Qwen3-Embedding-8B (4096 dims): 9 databases" in r.stdout
    )


def test_cli_plan_json_of_paths_beyond_ascii_is_still_the_reports_document(tmp_path, fixed_free):
    """The databases' part is rendered as the scan goes, escaped as json.dumps escapes."""
    root = tmp_path / "vidéos"
    build_dvd_tree(root / "été 日本", 3, clips=(1, 2), seed=3)
    (root / "bad ü").mkdir()
    (root / "bad ü" / "database.json").write_text("{not json")
    cli = Cli(None, tmp_path / "state")
    r = cli("plan", "--root", str(root), "--model", "8b", "--no-probe", "--json")
    assert r.exit_code == 0, r.output
    want = plan(_settings(root), probe=False)
    assert len(want["databases"]) == 4
    assert r.stdout == json.dumps(want, indent=2, default=str) + "\n"
    text = cli("plan", "--root", str(root), "--model", "8b", "--no-probe")
    assert text.exit_code == 0, text.output
    named = [line for line in text.stdout.splitlines() if line.startswith("  BAD ")]
    assert len(named) == 1 and "bad ü" in named[0], text.stdout


@pytest.mark.parametrize(
    "doc",
    [
        {"path": "/v/a/database.json", "dim": 3072, "reason": None, "made_by": {"model": "m", "dim": 8}, "x": []},
        {"path": "/v/tab\there/new\nline/\x01\x1f", "quote": 'say "hi" \\ /', "empty": {}},
        {"path": "/v/del\x7fchar"},  # printable to orjson, escaped by json.dumps
        {"path": "/v/vidéos/日本"},
        {"path": "/v/undecodable-\udcff"},  # a lone surrogate: os.fsdecode of a name not UTF-8
        {"records": 2**70},
        {"path": Path("/v/a"), "n": True},  # default=str
    ],
)
def test_plan_json_rendering_is_json_dumps_character_for_character(doc):
    from migrator.cli.app import _indented_json

    assert _indented_json(doc) == json.dumps(doc, indent=2, default=str)


def test_the_filesystem_of_a_scanned_database_is_its_directorys(tmp_path):
    """plan's disk report puts each staged file on its directory's filesystem, from the scan's
    own read of the file (no stat of each directory)."""
    build_dvd_tree(tmp_path / "v", 3, clips=(1, 2), seed=1)
    found = list(scan([tmp_path / "v"], "database.json", None))
    assert len(found) == 3 and all(f.status == MIGRATE for f in found)
    assert all(f.dev == os.stat(f.path.parent).st_dev != 0 for f in found)
