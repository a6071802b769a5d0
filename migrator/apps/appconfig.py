"""The settings each application must change when its databases are cut over.

Migrated files hold vectors of the new model; an application still configured
for the old one fails to load them (DVD: "Embedding dim mismatch") or, worse at
the same dimension, answers from the wrong vector space. So `plan` warns about
a config it finds that names another model, and the cutover prints the lines to
set at the same moment.

- DeepVideoDiscovery: ``dvd/config.py``, ``AOAI_EMBEDDING_LARGE_MODEL_NAME`` and
  ``AOAI_EMBEDDING_LARGE_DIM``; looked for beside and above each ``--root``. Released
  DVD cannot reach vLLM at all: ``dvd/utils.py``'s ``get_embeddings`` posts to OpenAI's
  fixed URL (with ``OPENAI_API_KEY``) or to an Azure deployment route. So the lines
  also set ``EMBEDDING_ENDPOINT`` (the run's endpoint) and ``EMBEDDING_API_KEY`` (read
  from the variable the run's key came from, never its value), and ``dvd/utils.py`` is
  read: while it still posts to a fixed URL, plan and cutover say what to change.
- LightRAG: ``EMBEDDING_MODEL`` and ``EMBEDDING_DIM`` in the server's ``.env``
  (read from the directory the server starts in: looked for in the working
  directory and the two above it), or its environment. A Matryoshka size below
  the model's own needs ``EMBEDDING_SEND_DIM=true``. With
  ``EMBEDDING_ASYMMETRIC=true`` LightRAG may add a document prefix to what it
  embeds; plan says so, as the migration must then add it too (``--text-template``).
- nano-graphrag: no config file; the embedding function is code.

Each application's rules are hooks of its profile (``config_report``, ``config_edit``,
``config_files``, in its own module); this module runs them for the applications of a
migration, and writes and restores the files.
"""

from __future__ import annotations

import os
from pathlib import Path

from migrator import apps
from migrator.apps.configfiles import AppConfig, Wanted
from migrator.files import durable
from migrator.files.layout import backup_path

__all__ = ["AppConfig", "Applications", "apply", "by_application", "report", "restore"]


class Applications:
    """The applications of a set of files, added one file at a time: for each, the
    directories its settings are found from, those of its files for one whose
    ``settings_by_directory`` (LightRAG's .env), none for the others (found from the roots).
    A file with no profile counts as ``unknown`` (a job table from before profiles were kept
    knew DVD only). Memory holds those directories only: 100,000 DVD videos are one entry."""

    def __init__(self, unknown: str | None = None):
        self.unknown = unknown
        self._dirs: dict[str, set[str]] = {}

    def add(self, profile: str | None, path: str | os.PathLike) -> None:
        app = self.unknown if profile is None else profile
        if app in apps.APPLICATIONS:
            held = self._dirs.setdefault(app, set())
            if apps.by_name(app).settings_by_directory:
                held.add(os.path.dirname(path))

    def dirs(self) -> dict[str, list[Path]]:
        """Application name -> its directories, sorted: what :func:`report` and :func:`restore` take."""
        return {app: [Path(d) for d in sorted(held)] for app, held in self._dirs.items()}


def by_application(pairs, unknown: str | None = None) -> dict[str, list[Path]]:
    """:meth:`Applications.dirs` of (profile, path) pairs, any number, read once."""
    found = Applications(unknown)
    for profile, path in pairs:
        found.add(profile, path)
    return found.dirs()


def report(
    applications: dict[str, list[Path]],
    roots: list[Path],
    model: str,
    dim: int | None,  # None with --no-probe (or no answer) and a model of unknown dimension
    native_dim: int | None = None,
    *,
    endpoint: str | None = None,
    key_source: str | None = None,
) -> list[AppConfig]:
    """For each application with databases (name -> their directories, :func:`by_application`):
    its config files found, what they name now, and the lines to set for ``model`` at ``dim``
    (DVD: also the ``endpoint`` and the key, by where it comes from)."""
    wanted = Wanted(model, dim, native_dim, endpoint, key_source)
    out: list[AppConfig] = []
    for name in apps.APPLICATIONS:  # in the registry's order, so reports read the same way
        if name in applications:
            out += apps.by_name(name).config_report(applications[name], roots, wanted)
    for c in out:
        c.stale = c.stale or (c.model is not None and c.model != model) or (c.dim is not None and c.dim != dim)
    return out


# ------------------------------------------------------------- --apply-config
# The settings can also be changed by migrator itself, right after the swap, so that files
# and settings never disagree for longer than the swap. Each file is rewritten atomically
# (temporary file, fsync, rename), with its mode kept, after its original is kept as
# ``<file>.migrator-<id>.backup``; `migrate rollback` puts that back.
def apply(configs: list[AppConfig], migration_id: str) -> list[str]:
    """Write each found config with its new lines; one line per file changed, for the report."""
    done = []
    for cfg in configs:
        new = apps.by_name(cfg.application).config_edit(cfg)
        if new is None or cfg.path is None:
            continue
        path = Path(cfg.path)
        backup = Path(backup_path(path, migration_id))
        if not backup.exists():
            durable.link_or_copy(path, backup)  # the original, kept for rollback
        durable.atomic_write(path, [new.encode("utf-8")], like=path.stat())
        done.append(f"{path}: set {', '.join(line.partition('=')[0].strip() for line in cfg.lines)}")
    return done


def restore(roots: list[Path], applications: dict[str, list[Path]], migration_id: str) -> list[str]:
    """Put back every config this migration's --apply-config changed (rollback)."""
    out = []
    for name, dirs in applications.items():
        for path in apps.by_name(name).config_files(roots, dirs):
            backup = Path(backup_path(path, migration_id))
            if backup.exists():
                os.replace(backup, path)
                out.append(str(path))
    return out
