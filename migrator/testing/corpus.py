"""Build DeepVideoDiscovery-shaped video databases for tests and the demo.

The trees look exactly like what DVD's ``dvd/build_database.py`` leaves
behind, written with the real ``nano_vectordb`` package::

    <root>/<video_id>/captions/captions.json
    <root>/<video_id>/database.json
    <root>/<video_id>/frames/            (empty)

Captions are synthetic English scene descriptions; the "old" vectors are
``embedder.embed(bare caption, 3072, seed="text-embedding-3-large")``, a
deterministic stand-in for OpenAI's model.  Nothing here calls a network.

CLI::

    python -m migrator.testing.corpus --out DIR --videos N [--seed S] [--dim D]
                                      [--min-clips A --max-clips B]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from migrator.testing.embedder import count_tokens, embed

__all__ = [
    "OLD_MODEL",
    "OLD_DIM",
    "make_captions",
    "dvd_time",
    "dvd_vector",
    "caption_text",
    "build_dvd_database",
    "build_dvd_tree",
    "video_ids",
    "main",
]

OLD_MODEL = "text-embedding-3-large"
OLD_DIM = 3072


def _import_nano_vectordb():
    """Import nano_vectordb without keeping its ``logging.basicConfig(INFO)``.

    Importing it configures the root logger (handler + INFO level) when
    nothing else has; that would make every library's INFO chatter visible.
    The root logger is put back as it was, and the package's own logger is
    set to WARNING.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import nano_vectordb

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("nano-vectordb").setLevel(logging.WARNING)
    return nano_vectordb


NanoVectorDB = _import_nano_vectordb().NanoVectorDB


# --------------------------------------------------------------------------- #
# Caption text                                                                #
# --------------------------------------------------------------------------- #
_PEOPLE = [
    ("man in a gray hoodie", ["gray hoodie", "dark jeans", "short brown hair"], "pedestrian"),
    ("woman with curly red hair", ["curly red hair", "green raincoat"], "shop owner"),
    ("elderly man with a cane", ["white beard", "wooden cane", "flat cap"], "grandfather"),
    ("chef in a white apron", ["white apron", "tall hat"], "head chef"),
    ("young girl in a yellow dress", ["yellow dress", "pigtails"], "child"),
    ("police officer", ["navy uniform", "reflective vest"], "officer on patrol"),
    ("cyclist in a blue jersey", ["blue jersey", "black helmet"], "courier"),
    ("street musician", ["battered guitar", "knit beanie"], "performer"),
    ("golden retriever", ["golden fur", "red collar"], "family dog"),
    ("woman in a business suit", ["charcoal suit", "leather briefcase"], "manager"),
    ("teenage boy with headphones", ["oversized headphones", "skateboard"], "student"),
    ("nurse in blue scrubs", ["blue scrubs", "stethoscope"], "hospital nurse"),
]
_PLACES = [
    "a busy restaurant kitchen",
    "a crowded city street",
    "a dimly lit warehouse",
    "a train station platform",
    "a sunlit living room",
    "a sandy beach at dusk",
    "a small cluttered office",
    "a supermarket aisle",
    "a rainy parking lot",
    "a hospital corridor",
    "a quiet public library",
    "a rooftop garden",
]
_ACTIONS = [
    "walks slowly toward",
    "stands next to",
    "points at",
    "picks up",
    "sets down",
    "glances at",
    "leans against",
    "carefully examines",
    "hurries past",
    "reaches for",
    "pushes",
    "quietly studies",
    "waves toward",
    "kneels beside",
    "laughs at",
]
_OBJECTS = [
    "a wooden table",
    "a red bicycle",
    "the front door",
    "a stack of papers",
    "an open laptop",
    "a steaming coffee mug",
    "a cardboard box",
    "a ringing phone",
    "a shopping cart",
    "a flickering lamp",
    "a large map",
    "a metal toolbox",
    "a bouquet of flowers",
    "a vending machine",
    "a folded newspaper",
]
_CAMERA = [
    "The camera pans left to follow the movement.",
    "The shot cuts to a close-up of a pair of hands.",
    "A wide shot reveals the rest of the room.",
    "The camera slowly zooms in.",
    "The view switches to a handheld shot from behind.",
    "The frame is briefly blurred by motion.",
    "A static overhead shot shows the whole scene.",
]
_AMBIENCE = [
    "The lighting is warm and soft, with long shadows on the floor.",
    "Rain streaks across the window in the background.",
    "Harsh fluorescent light makes the colors look flat.",
    "Several people move in and out of focus behind them.",
    "Traffic noise and distant voices can be heard.",
    "The background music becomes louder and more tense.",
    "A clock on the wall shows a quarter past three.",
    "Steam rises from pots on the stove.",
]
_SPEECH = [
    "We need to leave before it gets dark.",
    "Did you see where I put the keys?",
    "This is exactly what I was talking about.",
    "Let's try that one more time, slowly.",
    "I don't think anyone noticed.",
    "Can you hand me that, please?",
    "It was here a minute ago.",
]
_SIGNS = ["OPEN 24 HOURS", "Platform 4", "Chapter 3: The Market", "EXIT", "SALE 50% OFF"]


def _people_for_video(rng: random.Random, k: int) -> dict[str, dict[str, Any]]:
    """A DVD-style ``subject_registry``: a few subjects with descriptions."""
    chosen = rng.sample(_PEOPLE, k)
    registry = {}
    for i, (name, looks, identity) in enumerate(chosen, start=1):
        registry[f"subject_{i}"] = {
            "name": name,
            "appearance": list(looks),
            "identity": [identity],
            "first_seen": "00:00:00" if i == 1 else f"00:00:{rng.randrange(1, 60):02d}",
        }
    return registry


def _sentence(rng: random.Random, subjects: list[str], place: str) -> str:
    who = rng.choice(subjects)
    kind = rng.randrange(7)
    if kind == 0:
        return f"The {who} {rng.choice(_ACTIONS)} {rng.choice(_OBJECTS)} in {place}."
    if kind == 1:
        other = rng.choice([s for s in subjects if s != who])
        return f"The {who} {rng.choice(_ACTIONS)} the {other}, then {rng.choice(_ACTIONS)} {rng.choice(_OBJECTS)}."
    if kind == 2:
        return rng.choice(_CAMERA)
    if kind == 3:
        return rng.choice(_AMBIENCE)
    if kind == 4:
        return f'The {who} says, "{rng.choice(_SPEECH)}"'
    if kind == 5:
        return f'On-screen text reads "{rng.choice(_SIGNS)}".'
    return f"Meanwhile, {rng.choice(_OBJECTS)} sits near the {who}, who {rng.choice(_ACTIONS)} {rng.choice(_OBJECTS)}."


def _caption(rng: random.Random, subjects: list[str], place: str, min_tokens: int = 50, max_tokens: int = 300) -> str:
    """Sentences until the caption has between min and max tokens (EOS incl.)."""
    target = rng.randint(min_tokens, max_tokens - 40)
    return _joined_until(target, [f"The scene takes place in {place}."], lambda: _sentence(rng, subjects, place))


def _joined_until(target: int, sentences: list[str], draw: Callable[[], str]) -> str:
    """``sentences`` and more from ``draw``, joined, once they reach ``target`` tokens."""
    while count_tokens(" ".join(sentences)) < target:
        sentences.append(draw())
    return " ".join(sentences)


#: What DVD's full mode puts after a clip's description: the transcript of what was said
#: during the clip (from the video's subtitles), or ``No transcript.``, then a full stop.
TRANSCRIPT_LEAD = "\n\nTranscript during this video clip: "
NO_TRANSCRIPT = "No transcript."
_TALK = [
    "So what we are going to do now is {act} {obj}.",
    "I told you {obj} was in {place}.",
    "Right, and if you look closely you can see {obj} over there.",
    "Okay, so the next thing is {obj}, and that takes a little longer.",
    "Honestly I did not expect {obj} to be here at all.",
    "Let me show you how this works, step by step.",
    "And that is why we came back to {place} the next morning.",
    "You have to remember that nobody had tried this before.",
    "Wait, wait, go back a second, I think I saw something.",
    "The thing about {place} is that it never really gets quiet.",
]


def _transcript(rng: random.Random, place: str) -> str:
    """What was said during one clip: 20-450 tokens of speech and the sentence that
    crosses the mark, median about 110 (a narrated or talk-heavy clip; the subtitles
    that overlap the clip, joined)."""
    target = min(450, max(20, int(rng.lognormvariate(4.7, 0.6))))

    def line() -> str:
        if rng.random() < 0.3:
            return rng.choice(_SPEECH)
        return rng.choice(_TALK).format(act=rng.choice(_ACTIONS), obj=rng.choice(_OBJECTS), place=place)

    return _joined_until(target, [], line)


def make_captions(
    rng: random.Random, n_clips: int, clip_secs: int = 10, *, p_empty: float = 0.0, speech: float | None = None
) -> dict[str, Any]:
    """A DVD ``captions.json`` dict: ``"<start>_<end>" -> {"caption": str}``.

    Keys are integer seconds ("0_10", "10_20", ...).  Each caption is 50-300
    tokens of scene description.  With ``p_empty`` some captions are ""
    (DVD skips them).  A ``subject_registry`` entry comes last, as DVD
    writes it.  (DVD's own captioner writes ``start_{start+clip_secs-1}``
    keys; the builder does not care either way.)

    With ``speech`` (a probability) each caption ends as DVD's full mode ends it:
    :data:`TRANSCRIPT_LEAD`, then, for that share of the clips, 20-450 tokens of
    what was said (else :data:`NO_TRANSCRIPT`), then ``.``. Without it the
    captions, and the random draws, are what they always were.
    """
    registry = _people_for_video(rng, rng.randint(2, 4))
    subjects = [s["name"] for s in registry.values()]
    place = rng.choice(_PLACES)
    captions: dict[str, Any] = {}
    for i in range(n_clips):
        if rng.random() < 0.15:  # scene change
            place = rng.choice(_PLACES)
        text = "" if rng.random() < p_empty else _caption(rng, subjects, place)
        if text and speech is not None:
            said = _transcript(rng, place) if rng.random() < speech else NO_TRANSCRIPT
            text = f"{text}{TRANSCRIPT_LEAD}{said}."
        captions[f"{i * clip_secs}_{(i + 1) * clip_secs}"] = {"caption": text}
    captions["subject_registry"] = registry
    return captions


# --------------------------------------------------------------------------- #
# DVD's formats                                                               #
# --------------------------------------------------------------------------- #
def dvd_time(seconds: float) -> str:
    """DVD's ``convert_seconds_to_hhmmss`` on float seconds: ``00:01:10.0``.

    Hours and minutes are 2-digit ints; the seconds stay a float formatted
    with ``:02`` (which pads nothing for floats), so 0 s is ``00:00:0.0``.
    """
    seconds = float(seconds)
    hours = int(seconds // 3600)
    seconds %= 3600
    minutes = int(seconds // 60)
    seconds %= 60
    return f"{hours:02}:{minutes:02}:{seconds:02}"


def caption_text(start: float, end: float, caption: str) -> str:
    """The caption as DVD stores it in a record: with its time prefix."""
    return f"[From {dvd_time(start)} to {dvd_time(end)} seconds]\n" + caption


def dvd_vector(caption: str, dim: int = OLD_DIM, seed: str = OLD_MODEL) -> np.ndarray:
    """The vector DVD passed to ``upsert`` for a bare caption.

    DVD does ``np.array(emb)`` on the JSON float list the API returned, so the
    array is float64; the record id is md5 of *these* bytes.
    """
    return np.array(embed(caption, dim, seed=seed).tolist(), dtype=np.float64)


def _clip_captions(captions: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start, end, bare caption) for each non-empty caption, in file order,
    following DVD's ``preprocess_captions``."""
    out = []
    for key, info in captions.items():
        if key in ("subject_registry", "character_registry"):
            continue
        text = info.get("caption")
        if text is None or len(text) == 0:
            continue
        if isinstance(text, list):
            text = text[0]
        elif not isinstance(text, str):
            text = str(text)
        start, end = map(float, key.split("_"))
        out.append((start, end, text))
    return out


def _video_length(captions: dict[str, Any]) -> str:
    ends = [float(k.split("_")[1]) for k in captions if k not in ("subject_registry", "character_registry")]
    return dvd_time(max(ends))


# --------------------------------------------------------------------------- #
# Builders                                                                    #
# --------------------------------------------------------------------------- #
def build_dvd_database(
    video_dir: os.PathLike | str,
    captions: dict[str, Any],
    *,
    dim: int = OLD_DIM,
    seed: str = OLD_MODEL,
    overwrite: bool = False,
) -> Path:
    """Write ``captions/captions.json`` and ``database.json`` as DVD does.

    Records: ``{"time_start_secs", "time_end_secs", "caption"}`` with DVD's
    time prefix; ids are nano-vectordb's md5 of each ``dvd_vector``.
    ``additional_data``: ``subject_registry``, ``video_length``,
    ``video_file_root`` (absolute path of *video_dir*) and ``fps`` (2).
    Returns the database path.
    """
    video_dir = Path(video_dir)
    db_path = video_dir / "database.json"
    if db_path.exists():
        if not overwrite:
            raise FileExistsError(db_path)
        db_path.unlink()
    (video_dir / "captions").mkdir(parents=True, exist_ok=True)
    (video_dir / "frames").mkdir(exist_ok=True)
    with open(video_dir / "captions" / "captions.json", "w") as fh:
        json.dump(captions, fh, indent=4)

    vdb = NanoVectorDB(dim, storage_file=str(db_path))
    records = [
        {
            "__vector__": dvd_vector(text, dim, seed),
            "time_start_secs": start,
            "time_end_secs": end,
            "caption": caption_text(start, end, text),
        }
        for start, end, text in _clip_captions(captions)
    ]
    vdb.upsert(records)
    registry = captions.get("subject_registry", captions.get("character_registry"))
    vdb.store_additional_data(
        subject_registry=registry,
        video_length=_video_length(captions),
        video_file_root=os.path.abspath(video_dir),
        fps=2,
    )
    vdb.save()
    return db_path


_YT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def video_ids(rng: random.Random, n: int) -> list[str]:
    """Distinct video ids: mostly YouTube-like 11-character ids (never
    starting with "-"), every third one ``vid_NNNN``."""
    ids: list[str] = []
    while len(ids) < n:
        i = len(ids)
        if i % 3 == 2:
            vid = f"vid_{i:04d}"
        else:
            vid = rng.choice(_YT_ALPHABET[:-1]) + "".join(rng.choices(_YT_ALPHABET, k=10))
        if vid not in ids:
            ids.append(vid)
    return ids


def build_dvd_tree(
    root: os.PathLike | str,
    n_videos: int,
    *,
    clips: Sequence[int] = (5, 40),
    seed: int = 0,
    dim: int = OLD_DIM,
    embed_seed: str = OLD_MODEL,
    p_empty: float = 0.0,
    speech: float | None = None,
) -> list[Path]:
    """Build *n_videos* DVD video folders under *root*; return their
    ``database.json`` paths (in creation order).  Deterministic in *seed*.
    ``speech``: captions carry DVD's transcripts (:func:`make_captions`)."""
    root = Path(root)
    rng = random.Random(seed)
    paths = []
    for vid in video_ids(rng, n_videos):
        n_clips = rng.randint(clips[0], clips[1])
        captions = make_captions(random.Random(rng.getrandbits(64)), n_clips, p_empty=p_empty, speech=speech)
        paths.append(build_dvd_database(root / vid, captions, dim=dim, seed=embed_seed))
    return paths


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m migrator.testing.corpus",
        description="Build a synthetic DeepVideoDiscovery database tree "
        "(test/demo data; vectors are a stand-in, not OpenAI's).",
    )
    ap.add_argument("--out", required=True, help="root folder (VIDEO_DATABASE_FOLDER)")
    ap.add_argument("--videos", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=OLD_DIM)
    ap.add_argument("--min-clips", type=int, default=5)
    ap.add_argument("--max-clips", type=int, default=40)
    args = ap.parse_args(argv)
    if not 1 <= args.min_clips <= args.max_clips:
        ap.error("need 1 <= --min-clips <= --max-clips")
    paths = build_dvd_tree(args.out, args.videos, clips=(args.min_clips, args.max_clips), seed=args.seed, dim=args.dim)
    print(f"built {len(paths)} DVD databases (dim {args.dim}) under {args.out}", file=sys.stderr)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
