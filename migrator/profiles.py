"""Which text each record's vector was made from.

A *profile* knows, for one application, how to get back the exact text that
was embedded from a stored record. The new vector must come from that same
text, or the migrated database would answer queries differently from one the
application builds itself with the new model.

- ``dvd``: DeepVideoDiscovery stores ``caption`` = ``"[From {t1} to {t2} seconds]\\n" + caption``
  but embedded the bare caption; we strip exactly that prefix.
- ``field``: any NanoVectorDB file, the text is the record field ``--text-field``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import BadDatabase, UsageError
from .nvdb import ID, NanoFile

# DVD's time helper prints whole hours and minutes and float seconds: 00:01:10.0
DVD_PREFIX = re.compile(r"\A\[From [0-9:.eE+-]+ to [0-9:.eE+-]+ seconds\]\n")


@dataclass(frozen=True)
class Profile:
    name: str
    text_field: str

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        value = record.get(self.text_field)
        if isinstance(value, list) and value and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            what = "has no" if value is None else f"has a non-text ({type(value).__name__})"
            hint = "nothing to embed; fix or remove that record"
            if self.name != "dvd":
                hint += ", or pick another --text-field"
            raise BadDatabase(nf.path, f"record #{index} (__id__ {record.get(ID)!r}) {what} "
                              f"'{self.text_field}' field", hint=hint)
        if self.name == "dvd":
            value = DVD_PREFIX.sub("", value, count=1)
        if not value.strip():
            raise BadDatabase(nf.path, f"record #{index} (__id__ {record.get(ID)!r}) has empty "
                              f"'{self.text_field}' text",
                              hint="nothing to embed; fix or remove that record")
        return value

    def texts(self, nf: NanoFile) -> list[str]:
        return [self.text_of(rec, i, nf) for i, rec in enumerate(nf.data)]


DVD = Profile("dvd", "caption")


def looks_like_dvd(nf: NanoFile) -> bool:
    """DVD's additional_data, or any record shaped like DVD's (so one damaged record
    is reported as such, not as a different kind of file)."""
    ad = nf.additional_data
    if isinstance(ad, dict) and "video_length" in ad and "video_file_root" in ad:
        return True
    return any(isinstance(r.get("caption"), str) and "time_start_secs" in r for r in nf.data[:64])


def choose(nf: NanoFile, *, profile: str | None = None, text_field: str | None = None) -> Profile:
    """The profile for this file: forced by options, or detected from its records."""
    if text_field:
        return Profile("field", text_field)
    if profile == "dvd":
        return DVD
    if profile not in (None, "auto"):
        raise UsageError(f"unknown profile {profile!r}: use 'dvd', or --text-field NAME")
    if looks_like_dvd(nf):
        return DVD
    raise BadDatabase(nf.path, "not a DeepVideoDiscovery database (records have no 'caption' and "
                      "'time_start_secs')", hint="name the field that holds the text with --text-field")


def describe(text_field: str | None, profile: str | None) -> str:
    return f"field:{text_field}" if text_field else (profile or "auto")
