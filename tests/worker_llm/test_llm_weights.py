"""The GGUF reader: dequantisation, config, content hash, tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eth_hash.auto import keccak

from worker.model.errors import ModelError, UnsupportedConfigError
from worker.model.llm import ChatTokenizer, LlamaWeights, dequantize, gguf_content_hash, gguf_path, model_hash
from worker.model.llm.weights import GGML_F32, GGML_Q4_1, GGML_Q8_0

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def reader() -> object:
    return gguf.GGUFReader(str(gguf_path()))


def _shape(t: object) -> tuple[int, ...]:
    return tuple(int(x) for x in reversed(t.shape.tolist()))  # type: ignore[attr-defined]


def test_our_dequantisation_equals_gguf_reference_bit_for_bit_on_every_tensor_type(reader: object) -> None:
    seen: dict[int, int] = {}
    for t in reader.tensors:  # type: ignore[attr-defined]
        ty = int(t.tensor_type)
        if seen.get(ty, 0) >= 3:
            continue
        seen[ty] = seen.get(ty, 0) + 1
        ours = dequantize(np.asarray(t.data), ty, _shape(t))
        ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(_shape(t))
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        assert ours.tobytes() == ref.tobytes(), t.name
    assert set(seen) == {GGML_F32, GGML_Q4_1, GGML_Q8_0}


def test_q4_1_block_decodes_low_nibbles_first_then_high_nibbles() -> None:
    d, m = np.float16(0.5), np.float16(-1.0)
    nibbles = bytes((i & 0xF) | ((15 - i) << 4) for i in range(16))
    block = np.frombuffer(d.tobytes() + m.tobytes() + nibbles, dtype=np.uint8)
    out = dequantize(block, GGML_Q4_1, (32,))
    expected = [0.5 * (i & 0xF) - 1.0 for i in range(16)] + [0.5 * (15 - i) - 1.0 for i in range(16)]
    assert out.tolist() == expected


def test_q8_0_block_is_signed_bytes_times_the_scale() -> None:
    d = np.float16(0.25)
    qs = np.arange(-16, 16, dtype=np.int8)
    block = np.frombuffer(d.tobytes() + qs.tobytes(), dtype=np.uint8)
    assert dequantize(block, GGML_Q8_0, (32,)).tolist() == [0.25 * q for q in range(-16, 16)]


def test_dequantisation_rejects_unknown_types_and_truncated_data() -> None:
    with pytest.raises(UnsupportedConfigError):
        dequantize(np.zeros(20, dtype=np.uint8), 2, (32,))  # Q4_0 is not supported
    with pytest.raises(UnsupportedConfigError):
        dequantize(np.zeros(19, dtype=np.uint8), GGML_Q4_1, (32,))
    with pytest.raises(ModelError):
        dequantize(np.zeros(20, dtype=np.uint8), GGML_Q4_1, (31,))


def test_weights_have_smollm2_shapes_and_tied_output_projection(smol_weights: LlamaWeights) -> None:
    c = smol_weights.config
    assert (c.num_layers, c.hidden, c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) == (30, 576, 9, 3, 64, 49152)
    assert c.ffn == 1536 and c.rope_base == 100000.0
    layer = smol_weights.layers[0]
    assert layer.qkv.shape == (576 + 2 * 192, 576)
    assert layer.gate_up.shape == (2 * 1536, 576)
    assert layer.down.shape == (576, 1536)
    assert smol_weights.embed.shape == (49152, 576)
    assert all(t.dtype == torch.float32 for t in (layer.qkv, layer.down, smol_weights.embed, smol_weights.final_norm))


def test_model_id_is_keccak_of_the_gguf_bytes(tmp_path: Path) -> None:
    assert model_hash() == gguf_content_hash()
    assert len(model_hash()) == 32
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF" + bytes(range(256)) * 5000)
    h = gguf_content_hash(f)
    assert h == keccak(f.read_bytes())
    f.write_bytes(b"GGUF" + bytes(range(256)) * 4999 + bytes(range(255)) + b"\x00")
    assert gguf_content_hash(f) != h


TEXTS = [
    "Hello world!",
    "The year 2024 had 366 days; 1,234,567.89 dollars.",
    "  leading spaces\n\nnewlines\ttabs   trailing  ",
    "日本語 🙂 naïve café Zürich",
    "def f(x):\n    return x**2  # comment",
    "It's what they'll do, isn't it? I'd've.",
    "<|im_start|>user\nhi<|im_end|>\n",
]


def test_tokenizer_matches_transformers_gguf_tokenizer(chat_tokenizer: ChatTokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    path = gguf_path()
    ref = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in TEXTS:
        ids = chat_tokenizer.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), text
        assert chat_tokenizer.decode(ids, skip_special=False) == text
    messages = [{"role": "user", "content": "What is 2+2?"}]
    ours = chat_tokenizer.render_chat(messages)
    assert ours == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.endswith("<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    assert chat_tokenizer.render_chat(with_system) == ref.apply_chat_template(
        with_system, tokenize=False, add_generation_prompt=True
    )


def test_chat_encoding_starts_with_the_im_start_control_token(chat_tokenizer: ChatTokenizer) -> None:
    ids = chat_tokenizer.encode_chat([{"role": "user", "content": "hi"}])
    assert ids[0] == 1 and chat_tokenizer.eos_id == 2
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert chat_tokenizer.decode(ids) == f"system\n{system}\nuser\nhi\nassistant\n"


def test_chat_rejects_messages_without_role_or_content(chat_tokenizer: ChatTokenizer) -> None:
    with pytest.raises(ModelError):
        chat_tokenizer.render_chat([{"role": "user"}])
    with pytest.raises(ModelError):
        chat_tokenizer.render_chat([])
