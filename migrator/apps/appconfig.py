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
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from migrator.files import durable
from migrator.files.layout import backup_path

DVD_MODEL = re.compile(r"""^\s*AOAI_EMBEDDING_LARGE_MODEL_NAME\s*=\s*(['"])(.*?)\1""", re.M)
DVD_DIM = re.compile(r"^\s*AOAI_EMBEDDING_LARGE_DIM\s*=\s*(\d+)", re.M)
MAX_CONFIG_BYTES = 1 << 20
UP_LEVELS = 3


@dataclass
class AppConfig:
    application: str
    path: str | None  # the file found (None: none found, or the app has none)
    model: str | None = None  # what it names now
    dim: int | None = None
    lines: list[str] = field(default_factory=list)  # what to set at cutover
    notes: list[str] = field(default_factory=list)
    stale: bool = False  # names another model or dimension than the migration's

    def as_dict(self) -> dict:
        return asdict(self)


def dvd_lines(model: str, dim: int | None, endpoint: str | None = None, key_source: str | None = None) -> list[str]:
    lines = [f'AOAI_EMBEDDING_LARGE_MODEL_NAME = "{model}"', f"AOAI_EMBEDDING_LARGE_DIM = {dim}"]
    if endpoint:
        lines.append(f'EMBEDDING_ENDPOINT = "{endpoint}"')
    if key_source and key_source.startswith("file:"):
        lines.append(f'EMBEDDING_API_KEY = open("{key_source[5:]}").read().strip()')
    else:
        lines.append(f'EMBEDDING_API_KEY = os.environ.get("{key_source or "VLLM_API_KEY"}")')
    return lines


FIXED_EMBEDDING_URL = re.compile(r"""https://api\.openai\.com/v1|/openai/deployments/""")


def dvd_utils_note(config_path: Path) -> str | None:
    """What ``dvd/utils.py`` beside DVD's config still needs, or None when it reads
    ``EMBEDDING_ENDPOINT`` (or is not there to read)."""
    utils = config_path.with_name("utils.py")
    text = _read(utils)
    if text is None:
        return None
    start = text.find("def get_embeddings")
    if start < 0:
        return None
    body = text[start : start + 4000]
    nxt = re.search(r"\n(?:class |def |    @staticmethod)", body[20:])
    body = body[: 20 + nxt.start()] if nxt else body
    if "EMBEDDING_ENDPOINT" in body or not FIXED_EMBEDDING_URL.search(body):
        return None
    return (
        f"{utils}: get_embeddings still posts to OpenAI's fixed URL (https://api.openai.com/v1) or an "
        f"Azure deployment, so DVD cannot query the migrated databases: make it post to "
        f'f"{{config.EMBEDDING_ENDPOINT}}/embeddings" with "Authorization: Bearer " + '
        f"config.EMBEDDING_API_KEY"
    )


def lightrag_lines(model: str, dim: int | None, native_dim: int | None = None) -> list[str]:
    lines = [f"EMBEDDING_MODEL={model}", f"EMBEDDING_DIM={dim}"]
    if native_dim and dim is not None and dim < native_dim:
        lines.append("EMBEDDING_SEND_DIM=true")
    return lines


def nanographrag_lines(model: str, dim: int | None) -> list[str]:
    return [
        f"GraphRAG(embedding_func=EmbeddingFunc(embedding_dim={dim}, ...)), the function calling "
        f"{model} on your vLLM endpoint"
    ]


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _upward(start: Path, levels: int = UP_LEVELS):
    d = start
    for _ in range(levels + 1):
        yield d
        if d.parent == d:
            return
        d = d.parent


def _env_values(text: str) -> dict[str, str]:
    """KEY=value lines of a .env file (comments and quotes removed; the last one wins)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        out[key] = value
    return out


def find_dvd(roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        for d in _upward(Path(root).resolve()):
            for cand in (d / "config.py", d / "dvd" / "config.py"):
                if cand not in found and cand.is_file() and DVD_MODEL.search(_read(cand) or ""):
                    found.append(cand)
    return found


def find_lightrag(dirs: list[Path]) -> list[Path]:
    found: list[Path] = []
    for start in dirs:
        for d in _upward(Path(start).resolve(), 2):
            cand = d / ".env"
            if cand not in found and cand.is_file() and "EMBEDDING_" in (_read(cand) or ""):
                found.append(cand)
    return found


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
    """For each application with databases (name -> their paths): its config files found,
    what they name now, and the lines to set for ``model`` at ``dim`` (DVD: also the
    ``endpoint`` and the key, by where it comes from)."""
    out: list[AppConfig] = []
    if applications.get("dvd"):
        lines = dvd_lines(model, dim, endpoint, key_source)
        paths = find_dvd(roots)
        for p in paths:
            text = _read(p) or ""
            m, d = DVD_MODEL.search(text), DVD_DIM.search(text)
            cfg = AppConfig("dvd", str(p), m.group(2) if m else None, int(d.group(1)) if d else None, lines)
            note = dvd_utils_note(p)
            if note:
                cfg.notes.append(note)
                cfg.stale = True
            out.append(cfg)
        if not paths:
            out.append(
                AppConfig(
                    "dvd", None, lines=lines, notes=["no dvd/config.py found near --root; change these lines in yours"]
                )
            )
    if applications.get("lightrag"):
        lines = lightrag_lines(model, dim, native_dim)
        paths = find_lightrag(sorted({p.parent for p in applications["lightrag"]}))
        for p in paths:
            env = _env_values(_read(p) or "")
            dim_text = env.get("EMBEDDING_DIM", "")
            cfg = AppConfig(
                "lightrag",
                str(p),
                env.get("EMBEDDING_MODEL") or None,
                int(dim_text) if dim_text.isdigit() else None,
                lines,
            )
            if env.get("EMBEDDING_ASYMMETRIC", "").lower() in ("true", "1", "yes"):
                prefix = env.get("EMBEDDING_DOCUMENT_PREFIX", "")
                if prefix and prefix != "NO_PREFIX":
                    cfg.notes.append(
                        f"EMBEDDING_ASYMMETRIC=true: LightRAG embeds documents as "
                        f"{prefix!r} + content; migrate with --text-template "
                        f"'{prefix}{{content}}' so the new vectors match"
                    )
            out.append(cfg)
        if not paths:
            out.append(
                AppConfig(
                    "lightrag",
                    None,
                    lines=lines,
                    notes=[
                        "no LightRAG .env found near the working dir; set these where the server reads its "
                        "settings (its .env or environment)"
                    ],
                )
            )
    if applications.get("nano-graphrag"):
        out.append(
            AppConfig(
                "nano-graphrag",
                None,
                lines=nanographrag_lines(model, dim),
                notes=["nano-graphrag takes its embedding function in code"],
            )
        )
    for c in out:
        c.stale = c.stale or (c.model is not None and c.model != model) or (c.dim is not None and c.dim != dim)
    return out


# ------------------------------------------------------------- --apply-config
# The settings can also be changed by migrator itself, right after the swap, so that files
# and settings never disagree for longer than the swap. Each file is rewritten atomically
# (temporary file, fsync, rename), with its mode kept, after its original is kept as
# ``<file>.migrator-<id>.backup``; `migrate rollback` puts that back.

_PY_ASSIGN = r"^(\s*){key}\s*=.*$"


def _set_py(text: str, key: str, value_src: str) -> str:
    """``key = value_src`` in Python source: the assignment replaced, or added at the end."""
    pattern = re.compile(_PY_ASSIGN.format(key=re.escape(key)), re.M)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key} = {value_src}", text, count=1)
    return text.rstrip("\n") + f"\n{key} = {value_src}\n"


def _set_env(text: str, key: str, value: str) -> str:
    pattern = re.compile(rf"^(\s*(?:export\s+)?){re.escape(key)}\s*=.*$", re.M)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key}={value}", text, count=1)
    return text.rstrip("\n") + f"\n{key}={value}\n"


def edited(cfg: AppConfig) -> str | None:
    """The config file's new text with ``cfg.lines`` set (None: nothing to edit)."""
    if not cfg.path or cfg.application not in ("dvd", "lightrag"):
        return None
    text = _read(Path(cfg.path))
    if text is None:
        return None
    new = text
    for line in cfg.lines:
        key, _, value = (part.strip() for part in line.partition("="))
        if cfg.application == "dvd":
            new = _set_py(new, key, value)
        else:
            new = _set_env(new, key, value)
    if cfg.application == "dvd" and "os.environ" in new and not re.search(r"^\s*import os\b", new, re.M):
        new = "import os\n" + new
    return new if new != text else None


def apply(configs: list[AppConfig], migration_id: str) -> list[str]:
    """Write each found config with its new lines; one line per file changed, for the report."""
    done = []
    for cfg in configs:
        new = edited(cfg)
        if new is None:
            continue
        assert cfg.path is not None  # edited() is None for a config without a file
        path = Path(cfg.path)
        backup = backup_path(path, migration_id)
        if not backup.exists():
            durable.link_or_copy(path, backup)  # the original, kept for rollback
        durable.atomic_write(path, [new.encode("utf-8")], like=path.stat())
        done.append(f"{path}: set {', '.join(line.partition('=')[0].strip() for line in cfg.lines)}")
    return done


def restore(roots: list[Path], lightrag_dirs: list[Path], migration_id: str) -> list[str]:
    """Put back every config this migration's --apply-config changed (rollback)."""
    out = []
    for path in [*find_dvd(roots), *find_lightrag(lightrag_dirs)]:
        backup = backup_path(path, migration_id)
        if backup.exists():
            os.replace(backup, path)
            out.append(str(path))
    return out
