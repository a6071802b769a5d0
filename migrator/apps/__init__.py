"""The applications migrator knows, in one registry.

Each application is a :class:`~migrator.apps.base.Profile`, one module each:
:mod:`~migrator.apps.dvd`, :mod:`~migrator.apps.lightrag` and :mod:`~migrator.apps.nanographrag`.
A profile says how its records keep their texts, whether it opens a working dir whole, how
messages name it and how its files are recognised. Everything that needs "which application
is this, and what does it want" asks here, so nothing else names them one by one. The
application modules import only :mod:`~migrator.apps.base` (no import cycle).

Beside them: :mod:`~migrator.apps.appconfig` (the settings each application changes at
cutover) and :mod:`~migrator.apps.provenance` (which model made a file's vectors).
"""

from __future__ import annotations

import contextlib
import os

from migrator.apps import lightrag, nanographrag
from migrator.apps.base import APPLICATIONS, KEEP, Field, Profile, Spec, Template
from migrator.apps.dvd import DVD
from migrator.errors import BadDatabase
from migrator.files.nvdb import NanoFile

__all__ = [
    "APPLICATIONS",
    "DVD",
    "KEEP",
    "Field",
    "Profile",
    "Spec",
    "Template",
    "by_name",
    "choose",
    "detect",
    "label_of",
    "recorded_maker",
    "storage_locks",
    "title_of",
    "unit_of",
]

# in detection order: the first whose files these look like
_REGISTRY: dict[str, Profile] = {p.name: p for p in (DVD, lightrag.PROFILE, nanographrag.PROFILE)}
assert tuple(_REGISTRY) == APPLICATIONS, "apps.base.APPLICATIONS must list every registered application"


def by_name(name: str) -> Profile:
    return _REGISTRY[name]


def detect(nf: NanoFile) -> str | None:
    """Whose file this is, from its records, its name and its neighbours (None: unknown)."""
    for name, prof in _REGISTRY.items():
        if prof.looks_like(nf):
            return name
    return None


def choose(nf: NanoFile, spec: Spec | None = None) -> Profile:
    """The profile for this file: forced by the spec, or detected."""
    spec = spec or Spec()
    if spec.text_field:
        return Field(spec.text_field)
    if spec.text_template is not None:
        return Template(spec.text_template)
    if spec.profile not in (None, "auto"):
        return by_name(spec.profile)
    found = detect(nf)
    if found is None:
        raise BadDatabase(
            nf.path,
            "not a file of an application migrator knows (DeepVideoDiscovery, LightRAG, nano-graphrag)",
            hint="name the field that holds the text with --text-field, or build it with --text-template",
        )
    return by_name(found)


def title_of(application: str) -> str:
    """An application's name where its settings are printed (DeepVideoDiscovery, LightRAG)."""
    return _REGISTRY[application].title if application in _REGISTRY else application


def recorded_maker(nf: NanoFile) -> tuple[str, int | None] | None:
    """The model a file records for its own vectors, by its application's convention."""
    for prof in _REGISTRY.values():
        made = prof.made_by(nf)
        if made is not None:
            return made
    return None


@contextlib.contextmanager
def storage_locks(jobs):
    """Every lock the applications hold over these jobs' files (rows with .profile and .path),
    held together; an application holding one refuses the whole set (LockHeld)."""
    with contextlib.ExitStack() as stack:
        for name, prof in _REGISTRY.items():
            paths = [j.path for j in jobs if j.profile == name]
            if paths:
                stack.enter_context(prof.storage_locks(paths))
        yield


def label_of(profile: str | None) -> str:
    """The application a job's profile belongs to, as messages name it."""
    return _REGISTRY[profile].label if profile in _REGISTRY else "their application"


def unit_of(profile: str | None, path: str) -> str:
    """The key of the files that move together (cutover, rollback) with ``path``.

    LightRAG and nano-graphrag open every vector file of a working dir at one dimension
    (``AssertionError: Embedding dim mismatch`` otherwise), so their working dir (a
    workspace's directory) is one unit. A DVD video, and any other file, is its own unit.
    A file that could not be read (no profile) but is named like theirs (``vdb_*.json``)
    belongs to its directory's unit too, so a broken sibling still holds the others back.
    """
    # strings, not a Path: cutover and rollback ask this of every file
    if profile in _REGISTRY and _REGISTRY[profile].whole_directory:
        return os.path.dirname(path)
    if profile is None and os.path.basename(path).startswith("vdb_") and path.endswith(".json"):
        return os.path.dirname(path)
    return path
