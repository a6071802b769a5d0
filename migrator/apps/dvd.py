"""DeepVideoDiscovery: one NanoVectorDB per video, a record per clip.

DVD stores ``caption`` as ``"[From {t1} to {t2} seconds]\\n" + caption`` but embedded the
bare caption, so exactly that prefix is taken off. Its settings (the model, the dimension)
live in the checkout's ``dvd/config.py``: see :mod:`migrator.apps.appconfig`.
"""

from __future__ import annotations

import re
from pathlib import Path

from migrator.apps.base import Field
from migrator.apps.configfiles import AppConfig, Wanted, edited, read_text, set_py, upward
from migrator.files.nvdb import NanoFile

# DVD's time helper prints whole hours and minutes and float seconds: 00:01:10.0
DVD_PREFIX = re.compile(r"\A\[From [0-9:.eE+-]+ to [0-9:.eE+-]+ seconds\]\n")


class Dvd(Field):
    name = "dvd"
    application = "dvd"
    label = "DVD"
    title = "DeepVideoDiscovery"

    def looks_like(self, nf: NanoFile) -> bool:
        return looks_like_dvd(nf)

    def __init__(self):
        super().__init__("caption", "dvd")

    def config_report(self, dirs: list[Path], roots: list[Path], wanted: Wanted) -> list[AppConfig]:
        """``dvd/config.py`` beside or above each root: the model, dim, endpoint and key lines,
        and what ``dvd/utils.py`` beside it still needs."""
        lines = dvd_lines(wanted.model, wanted.dim, wanted.endpoint, wanted.key_source)
        out = []
        for p in find_dvd(roots):
            text = read_text(p) or ""
            m, d = DVD_MODEL.search(text), DVD_DIM.search(text)
            cfg = AppConfig("dvd", str(p), m.group(2) if m else None, int(d.group(1)) if d else None, lines)
            note = dvd_utils_note(p)
            if note:
                cfg.warnings.append(note)
                cfg.stale = True
            out.append(cfg)
        return out or [
            AppConfig(
                "dvd", None, lines=lines, notes=["no dvd/config.py found near --root; change these lines in yours"]
            )
        ]

    def config_edit(self, cfg: AppConfig) -> str | None:
        new = edited(cfg, set_py)
        if new is not None and "os.environ" in new and not re.search(r"^\s*import os\b", new, re.M):
            new = "import os\n" + new
        return new

    def config_files(self, roots: list[Path], dirs: list[Path]) -> list[Path]:
        return find_dvd(roots)

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        value = self._checked(self.value(record), "caption", index, record, nf)
        return self._checked(DVD_PREFIX.sub("", value, count=1), "caption", index, record, nf)


DVD = Dvd()

# ------------------------------------------------------------------- its settings
DVD_MODEL = re.compile(r"""^\s*AOAI_EMBEDDING_LARGE_MODEL_NAME\s*=\s*(['"])(.*?)\1""", re.M)
DVD_DIM = re.compile(r"^\s*AOAI_EMBEDDING_LARGE_DIM\s*=\s*(\d+)", re.M)


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
    text = read_text(utils)
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


def find_dvd(roots: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        for d in upward(Path(root).resolve()):
            for cand in (d / "config.py", d / "dvd" / "config.py"):
                if cand not in found and cand.is_file() and DVD_MODEL.search(read_text(cand) or ""):
                    found.append(cand)
    return found


def looks_like_dvd(nf: NanoFile) -> bool:
    """DVD's additional_data, or any record shaped like DVD's (so one damaged record
    is reported as such, not as a different kind of file)."""
    ad = nf.additional_data
    if isinstance(ad, dict) and "video_length" in ad and "video_file_root" in ad:
        return True
    return any(isinstance(r.get("caption"), str) and "time_start_secs" in r for r in nf.data[:64])
