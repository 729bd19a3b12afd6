"""Prompt integrity: user text is data, only a chat template contributes control tokens.

A tokenizer that parses special-token text would turn ``<|im_end|>`` typed by a user into the
real control token, letting the user close their turn and forge a system one. So:

- plain text (Saxml ``lm.*``, OpenAI ``/v1/completions``) is tokenised with special-token
  parsing off (`text_token_ids`);
- a chat is rendered by its template around unique placeholders, and the rendered string is
  tokenised piece by piece: the template's pieces with special tokens parsed, each message's
  content with parsing off (`render_chat`). The result is a `TokenPrompt`: the rendered text,
  as a `str` for servables that take text, plus the token ids an engine should run;
- a prompt a caller gives as token ids is a `TokenPrompt` too (its text decoded).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from sax.errors import invalid


class TokenPrompt(str):
    """A prompt whose token ids are already decided: a rendered chat (only the template added
    control tokens) or ids a caller sent. Engines with a tokenizer run `token_ids`; others
    read the text."""

    token_ids: tuple[int, ...]

    def __new__(cls, text: str, token_ids: Sequence[int]) -> TokenPrompt:
        prompt = super().__new__(cls, text)
        prompt.token_ids = tuple(token_ids)
        return prompt


def text_token_ids(tokenizer: Any, text: str, *, add_special_tokens: bool = True) -> list[int]:
    """`text` as token ids with special-token text kept as plain text; `add_special_tokens`
    adds the tokenizer's own BOS/EOS framing (not anything from `text`)."""
    return list(
        tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True).input_ids
    )


def _special_texts(tokenizer: Any) -> list[str]:
    return [t for t in getattr(tokenizer, "all_special_tokens", []) if t]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> TokenPrompt:
    """The chat in `tokenizer`'s template, with the generation prompt, as a `TokenPrompt`.

    Raises INVALID_ARGUMENT (``messages``) when a template transforms content so the pieces
    cannot be told apart and some content holds special-token text.
    """
    tag = uuid.uuid4().hex
    holders = [f"\u27e6{tag}:{i}\u27e7" for i in range(len(messages))]
    marked = [{**m, "content": holders[i]} for i, m in enumerate(messages)]
    template = str(
        tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
    )
    text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    pieces = re.split(f"\u27e6{tag}:(\\d+)\u27e7", template)
    indices = [int(i) for i in pieces[1::2]]
    if sorted(indices) != list(range(len(messages))):
        # The template dropped, repeated or rewrote a content: fall back to the whole text,
        # which is safe only when no content carries control-token text.
        for i, m in enumerate(messages):
            if any(s in m["content"] for s in _special_texts(tokenizer)):
                raise invalid(
                    "message content holds control-token text this model's template cannot "
                    "keep apart from its own",
                    f"messages.{i}.content",
                )
        return TokenPrompt(text, tokenizer(text, add_special_tokens=False).input_ids)
    ids: list[int] = []
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if piece:
                ids += tokenizer(piece, add_special_tokens=False).input_ids
        else:
            content = messages[int(piece)]["content"]
            if content:
                ids += text_token_ids(tokenizer, content, add_special_tokens=False)
    return TokenPrompt(text, ids)
