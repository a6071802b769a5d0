"""The Profile every application implements: which text each record's vector was made from.

A *profile* knows, for one application, how to get back the exact text that
was embedded from a stored record, and what else in the file describes the
vectors (and so must change with them). The new vector must come from that
same text, or the migrated database would answer queries differently from one
the application builds itself with the new model.

- ``dvd``: DeepVideoDiscovery stores ``caption`` = ``"[From {t1} to {t2} seconds]\\n" + caption``
  but embedded the bare caption; we strip exactly that prefix.
- ``lightrag``: the record field ``content`` (see :mod:`migrator.apps.lightrag`), plus
  LightRAG's per-record ``vector`` copy and its ``additional_data`` marker.
- ``nano-graphrag``: the text is in the neighbouring stores (see :mod:`migrator.apps.nanographrag`).
- ``field``: any NanoVectorDB file, the text is the record field ``--text-field``.
- ``template``: any NanoVectorDB file, the text is ``--text-template`` filled from fields.

The profile is picked per file, from its records, its name and its neighbours
(:func:`choose`); ``--profile`` forces one. What the user asked for is a
:class:`Spec`, kept with the migration so a resumed run reads files the same way.
"""

from __future__ import annotations

import contextlib
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from migrator.apps.configfiles import AppConfig, Wanted
from migrator.config import APPLICATIONS
from migrator.errors import BadDatabase, UsageError
from migrator.files.nvdb import ID, NanoFile

KEEP = object()  # Profile.additional_data's answer for "leave it as it is"


@dataclass(frozen=True)
class Spec:
    """How the user asked texts to be found: ``--profile``, ``--text-field`` or ``--text-template``."""

    profile: str | None = None  # None or "auto": detect per file
    text_field: str | None = None
    text_template: str | None = None

    def __post_init__(self):
        given = [o for o, v in (("--text-field", self.text_field), ("--text-template", self.text_template)) if v]
        if len(given) > 1:
            raise UsageError("--text-field and --text-template both name the text; give one of them")
        if given and self.profile not in (None, "auto"):
            raise UsageError(f"--profile {self.profile} and {given[0]} both say where the text is; give one")
        if self.profile not in (None, "auto", *APPLICATIONS):
            raise UsageError(
                f"unknown profile {self.profile!r}: use one of auto, {', '.join(APPLICATIONS)}, "
                f"or --text-field NAME / --text-template TEMPLATE"
            )
        if self.text_template is not None:
            Template(self.text_template)  # a bad template is refused before anything starts

    def describe(self) -> str:
        """The form kept in the job table (``Migration.profile``)."""
        if self.text_field:
            return f"field:{self.text_field}"
        if self.text_template is not None:
            return f"template:{self.text_template}"
        return self.profile or "auto"

    @classmethod
    def parse(cls, text: str | None) -> "Spec":
        if not text or text == "auto":
            return cls()
        if text.startswith("field:"):
            return cls(text_field=text[len("field:") :])
        if text.startswith("template:"):
            return cls(text_template=text[len("template:") :])
        return cls(profile=text)

    @property
    def forced(self) -> bool:
        return self.describe() != "auto"


class Profile:
    """How one kind of file keeps its texts. Subclasses override what differs."""

    name = "field"
    application: str | None = None  # whose config must change at cutover (appconfig.py)
    label = "its application"  # how messages name that application
    title = "its application"  # ... and where its settings are printed
    rewrites_records = False  # records hold something made from the vector
    whole_directory = False  # the application opens all its files in a directory at
    # one dimension: they are swapped and restored together
    settings_by_directory = False  # its settings are found from its files' directories (else
    # from the roots alone): only then are those directories gathered (appconfig.Applications)

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        raise NotImplementedError

    def texts(self, nf: NanoFile) -> list[str]:
        return [self.text_of(rec, i, nf) for i, rec in enumerate(nf.data)]

    def notes(self, nf: NanoFile, texts: list[str]) -> list[str]:
        """What a user should hear about records read from ``nf`` (plan and run say it)."""
        return []

    def looks_like(self, nf: NanoFile) -> bool:
        """Is this one of this application's files (its records, name, neighbours)?"""
        return False

    def made_by(self, nf: NanoFile) -> tuple[str, int | None] | None:
        """The model (and dimension) the file itself records for its vectors, if it does."""
        return None

    def storage_locks(self, lives: list) -> contextlib.AbstractContextManager:
        """Locks the application holds over its files, held while they are swapped."""
        return contextlib.nullcontext()

    # Its settings (apps/appconfig.py runs these for each application of a migration).
    def config_report(self, dirs: list[Path], roots: list[Path], wanted: Wanted) -> list[AppConfig]:
        """The settings files found for the application's files (in ``dirs``, given where
        ``settings_by_directory``; under ``roots``): what they say now, and the lines that
        make them fit ``wanted``."""
        return []

    def config_edit(self, cfg: AppConfig) -> str | None:
        """``cfg``'s file with its lines set (None: nothing to write, or no file to write)."""
        return None

    def config_files(self, roots: list[Path], dirs: list[Path]) -> list[Path]:
        """The settings files --apply-config may have changed for the files in ``dirs``."""
        return []

    def record(self, rec: dict, vector: np.ndarray) -> dict:
        """The record as the migrated file keeps it, given its new vector."""
        return rec

    def check_record(self, new: dict, old: dict, vector: np.ndarray) -> str | None:
        """Whether a staged record is ``old`` rewritten for ``vector`` (None: yes)."""
        return None if new == old else "differs from the source record"

    def additional_data(self, old: Any, model: str, dim: int) -> Any:
        """The migrated file's ``additional_data`` (``KEEP``: unchanged)."""
        return KEEP

    @staticmethod
    def _missing(value: Any) -> str:
        return "has no" if value is None else f"has a non-text ({type(value).__name__})"

    @staticmethod
    def _refuse(nf: NanoFile, index: int, record: dict, what: str, hint: str) -> BadDatabase:
        return BadDatabase(nf.path, f"record #{index} (__id__ {record.get(ID)!r}) {what}", hint=hint)

    def _checked(
        self,
        value: Any,
        field_name: str,
        index: int,
        record: dict,
        nf: NanoFile,
        hint: str = "nothing to embed; fix or remove that record",
    ) -> str:
        if not isinstance(value, str):
            raise self._refuse(nf, index, record, f"{self._missing(value)} '{field_name}' field", hint)
        if not value.strip():
            raise self._refuse(
                nf, index, record, f"has empty '{field_name}' text", "nothing to embed; fix or remove that record"
            )
        return value


class Field(Profile):
    """The text is one record field (a list of strings: its first one, as DVD treats captions)."""

    def __init__(self, text_field: str, name: str = "field"):
        self.text_field, self.name = text_field, name

    def value(self, record: dict) -> Any:
        value = record.get(self.text_field)
        if isinstance(value, list) and value and isinstance(value[0], str):
            value = value[0]
        return value

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        return self._checked(
            self.value(record),
            self.text_field,
            index,
            record,
            nf,
            "nothing to embed; fix or remove that record, or pick another --text-field",
        )


class Template(Profile):
    """``--text-template '{title}\\n{body}'``: the text built from several record fields.

    Only plain field names are allowed (no ``{a.b}``, ``{a[0]}``, conversions or
    format specs); ``\\n``, ``\\t`` and ``\\\\`` in the template mean newline, tab
    and backslash, so a shell user can type them; ``{{`` and ``}}`` are braces."""

    name = "template"

    def __init__(self, template: str):
        self.template = template.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")
        self.parts: list[tuple[str, str | None]] = []
        try:
            for literal, field_name, spec, conversion in string.Formatter().parse(self.template):
                if field_name is not None and (not field_name.isidentifier() or spec or conversion):
                    raise UsageError(
                        f"--text-template: {{{field_name}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} is not a plain field name; write "
                        f"{{name}} for a record field"
                    )
                self.parts.append((literal, field_name))
        except ValueError as e:
            raise UsageError(f"--text-template: {e} (write {{{{ and }}}} for literal braces)") from None
        self.fields = [f for _, f in self.parts if f is not None]
        if not self.fields:
            raise UsageError("--text-template names no field: write it like '{title}\\n{body}'")

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        out = []
        for literal, field_name in self.parts:
            out.append(literal)
            if field_name is None:
                continue
            value = record.get(field_name)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise self._refuse(
                    nf,
                    index,
                    record,
                    f"{self._missing(value)} '{field_name}' field (named in --text-template)",
                    "fix or remove that record, or change --text-template",
                )
            out.append(str(value))
        return self._checked("".join(out), "--text-template", index, record, nf)
