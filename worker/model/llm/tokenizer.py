"""SmolLM2's tokenizer and chat template, built from the GGUF metadata alone.

The GGUF carries a GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`, `pre = smollm`):
the vocabulary, the merges, token types (3 = control, e.g. `<|im_start|>`), the special ids
and a Jinja chat template. llama.cpp's `smollm` pre-tokenizer splits every digit on its own and
then applies the GPT-2 regex, which is what the original `tokenizer.json` does
(`Digits(individual_digits=True)` then `ByteLevel(use_regex=True)`); the same pipeline is built
here with the `tokenizers` library. A test checks it against transformers' GGUF tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from worker.model.errors import InvalidInputError, UnsupportedConfigError
from worker.model.llm.weights import gguf_path

CONTROL_TOKEN_TYPE = 3


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer fields of a GGUF."""

    tokens: tuple[str, ...]
    merges: tuple[str, ...]
    token_types: tuple[int, ...]
    bos_id: int
    eos_id: int
    pad_id: int
    chat_template: str

    @classmethod
    def from_reader(cls, reader: Any) -> TokenizerSpec:
        """Read the spec from a `gguf.GGUFReader`."""

        def get(key: str) -> Any:
            f = reader.fields.get(key)
            if f is None:
                raise UnsupportedConfigError(f"GGUF metadata {key!r} missing")
            return f.contents()

        model, pre = get("tokenizer.ggml.model"), get("tokenizer.ggml.pre")
        if (model, pre) != ("gpt2", "smollm"):
            raise UnsupportedConfigError(f"tokenizer {model}/{pre} is not supported (gpt2/smollm is)")
        return cls(
            tokens=tuple(get("tokenizer.ggml.tokens")),
            merges=tuple(get("tokenizer.ggml.merges")),
            token_types=tuple(int(t) for t in get("tokenizer.ggml.token_type")),
            bos_id=int(get("tokenizer.ggml.bos_token_id")),
            eos_id=int(get("tokenizer.ggml.eos_token_id")),
            pad_id=int(get("tokenizer.ggml.padding_token_id")),
            chat_template=str(get("tokenizer.chat_template")),
        )


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to llama.cpp's `smollm` BPE."""
    vocab = {tok: i for i, tok in enumerate(spec.tokens)}
    merges = []
    for m in spec.merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise UnsupportedConfigError(f"malformed merge {m!r}")
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(spec.tokens, spec.token_types, strict=True)
        if ty == CONTROL_TOKEN_TYPE
    ]
    tok.add_special_tokens(specials)
    return tok


class ChatTokenizer:
    """Text <-> token ids and chat messages -> prompt ids for SmolLM2."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self._tok = build_tokenizer(spec)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(spec.chat_template)
        self.eos_id = spec.eos_id
        self.bos_id = spec.bos_id
        self.special_ids = frozenset(i for i, ty in enumerate(spec.token_types) if ty == CONTROL_TOKEN_TYPE)

    @classmethod
    def from_gguf(cls, path: Path | None = None) -> ChatTokenizer:
        """Build from the installed GGUF (or `path`)."""
        from gguf import GGUFReader

        return cls(TokenizerSpec.from_reader(GGUFReader(str(gguf_path() if path is None else path))))

    @property
    def vocab_size(self) -> int:
        return len(self.spec.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; control tokens written in the text (`<|im_start|>`) are recognised.

        No BOS is added (`tokenizer.ggml.add_bos_token = false`).
        """
        if not isinstance(text, str):
            raise InvalidInputError("text must be a string")
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `ids` (control tokens dropped unless `skip_special=False`)."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special))

    def render_chat(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The chat template applied to `messages` (each with `role` and `content` strings)."""
        for m in messages:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InvalidInputError("every message needs string 'role' and 'content'")
        if not messages:
            raise InvalidInputError("at least one message is required")
        return str(
            self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.spec.tokens[self.bos_id],
                eos_token=self.spec.tokens[self.eos_id],
            )
        )

    def encode_chat(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Prompt ids of a chat, ending with the assistant turn's header."""
        return self.encode(self.render_chat(messages))
