"""Which text a record was embedded from."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator import apps
from migrator.errors import BadDatabase
from migrator.files.nvdb import NanoFile


def _nf(records):
    return NanoFile(
        path=Path("x/database.json"), embedding_dim=2, data=records, keys=["data"], values={"data": records}
    )


def test_dvd_prefix_is_removed_exactly_once():
    rec = {
        "__id__": "a",
        "caption": "[From 00:00:0.0 to 00:00:10.0 seconds]\nA man walks. [From x]",
        "time_start_secs": 0.0,
    }
    nf = _nf([rec])
    prof = apps.choose(nf)
    assert prof.name == "dvd"
    assert prof.texts(nf) == ["A man walks. [From x]"]


def test_dvd_hours_and_long_times():
    rec = {"__id__": "a", "caption": "[From 01:02:3.5 to 01:02:13.5 seconds]\ntext", "time_start_secs": 1.0}
    assert apps.DVD.texts(_nf([rec])) == ["text"]


def test_text_field_profile_and_missing_text_names_record():
    nf = _nf([{"__id__": "a", "content": "hello"}, {"__id__": "b"}])
    prof = apps.choose(nf, apps.Spec(text_field="content"))
    with pytest.raises(BadDatabase) as e:
        prof.texts(nf)
    assert "record #1" in str(e.value) and "'b'" in str(e.value)


def test_empty_caption_after_prefix_is_refused():
    nf = _nf([{"__id__": "z", "caption": "[From 00:00:0.0 to 00:00:10.0 seconds]\n", "time_start_secs": 0.0}])
    with pytest.raises(BadDatabase, match="empty"):
        apps.DVD.texts(nf)


def test_non_dvd_without_text_field_says_what_to_do():
    nf = _nf([{"__id__": "a", "content": "x"}])
    with pytest.raises(BadDatabase, match="--text-field"):
        apps.choose(nf)
    with pytest.raises(BadDatabase, match="--text-template"):
        apps.choose(nf)
