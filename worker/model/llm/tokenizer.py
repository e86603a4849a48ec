"""SmolLM2's tokenizer and chat template: :mod:`common.chat_tokenizer` (torch-free, shared with
the gateway) raising this package's error types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tokenizers import Tokenizer

from common import chat_tokenizer as _c
from common.chat_tokenizer import CONTROL_TOKEN_TYPE
from worker.model.errors import InvalidInputError, UnsupportedConfigError

__all__ = ["CONTROL_TOKEN_TYPE", "ChatTokenizer", "TokenizerSpec", "build_tokenizer"]


@dataclass(frozen=True)
class TokenizerSpec(_c.TokenizerSpec):
    config_error: ClassVar[type[Exception]] = UnsupportedConfigError


def build_tokenizer(spec: _c.TokenizerSpec) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to llama.cpp's `smollm` BPE."""
    return _c.build_tokenizer(spec, UnsupportedConfigError)


class ChatTokenizer(_c.ChatTokenizer):
    """Text <-> token ids and chat messages -> prompt ids for SmolLM2."""

    input_error: ClassVar[type[Exception]] = InvalidInputError
    config_error: ClassVar[type[Exception]] = UnsupportedConfigError
    spec_class: ClassVar[type[_c.TokenizerSpec]] = TokenizerSpec
