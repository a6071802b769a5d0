"""Parsing an embeddings request as vLLM does: the JSON body, the forms of `input`, truncation and token counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from migrator.testing.embedder import _id_words, _words_of, prompt_words, token_strings
from migrator.testing.server.replies import _ApiError


@dataclass
class _Prompt:
    text: Optional[str] = None  # a text prompt ...
    ids: Optional[list[int]] = None  # ... or token ids


@dataclass
class _Prepared:
    words: list[str]  # what the embedder hashes
    tokens: int  # prompt length in tokens, after truncation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(message: str, param: Optional[str] = None) -> _ApiError:
    return _ApiError(400, message, param)


def _parse_object(body: bytes) -> dict:
    try:
        obj = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"JSON decode error: {exc}") from None
    if not isinstance(obj, dict):
        raise _bad("Input should be a valid JSON object")
    return obj


def _parse_input(value: Any) -> list[_Prompt]:
    """``input``: str, list[str], list[int] or list[list[int]]; else 400."""
    if value is None:
        raise _bad("Field required: input", "input")
    if isinstance(value, str):
        return [_Prompt(text=value)]
    if not isinstance(value, list) or not value:
        raise _bad(
            "input must be a string, a non-empty list of strings, or token ids (list[int] or list[list[int]])", "input"
        )
    if all(isinstance(v, str) for v in value):
        return [_Prompt(text=v) for v in value]
    if all(_is_int(v) for v in value):
        return [_Prompt(ids=_check_ids(value))]
    if all(isinstance(v, list) for v in value):
        return [_Prompt(ids=_check_ids(v)) for v in value]
    raise _bad("input items must all be strings, all token ids, or all lists of token ids", "input")


def _check_ids(ids: list) -> list[int]:
    if not ids or not all(_is_int(i) and i >= 0 for i in ids):
        raise _bad("token id prompts must be non-empty lists of non-negative ints", "input")
    return ids


def _prepare(prompt: _Prompt, truncate: Optional[int], add_special: bool) -> _Prepared:
    """Token count (EOS included when special tokens are added) and words,
    after keeping the first *truncate* tokens (EOS stays last)."""
    if prompt.ids is not None:
        ids = prompt.ids if truncate is None else prompt.ids[:truncate]
        return _Prepared(_id_words(ids), len(ids))
    assert prompt.text is not None  # a prompt is text or token ids
    words, count = prompt_words(prompt.text)
    if not add_special:
        count -= 1
    if truncate is not None and count > truncate:
        keep = truncate - 1 if add_special else truncate
        words, count = _words_of(token_strings(prompt.text)[:keep]), truncate
    return _Prepared(words, count)
