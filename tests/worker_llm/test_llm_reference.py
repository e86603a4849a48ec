"""Against Hugging Face transformers loading the same GGUF, on 20 chat prompts.

Tolerance: transformers dequantises the GGUF to the same fp32 weights (checked bitwise in
test_llm_weights) and runs the same fp32 math in another order (separate Q/K/V GEMMs,
rotate-half RoPE on un-permuted weights, SDPA). Measured differences are about 6e-5 absolute
on logits of magnitude about 30 (2e-6 relative); the test allows 5e-4 absolute.

Greedy tokens: our engine decodes 32 tokens greedily. transformers' teacher-forced logits on
prompt + our output must have their arg max at exactly our tokens (so its greedy decoding from
the same prompt produces the same tokens); for two prompts `generate` is also run directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from worker.model.llm import ChatTokenizer, Completion, Engine, LlamaForward, SamplingParams, gguf_path

transformers = pytest.importorskip("transformers")

LOGIT_ATOL = 5e-4
N_TOKENS = 32

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity in one sentence.",
    "List three prime numbers.",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a name for a pet turtle.",
    "Why is the sky blue?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "Write a Python function that reverses a string.",
    "What are the three states of matter?",
    "Suggest a healthy breakfast.",
    "Who wrote 'Pride and Prejudice'?",
    "What does a CPU do?",
    "Name a famous painting by Leonardo da Vinci.",
    "How many days are in a leap year?",
    "Describe the colour red to someone who cannot see.",
    "What is the boiling point of water in Fahrenheit?",
    "Tell me a fun fact about octopuses.",
    "What is photosynthesis?",
]


@pytest.fixture(scope="module")
def hf_model() -> Any:
    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    return model


@pytest.fixture(scope="module")
def prompts(chat_tokenizer: ChatTokenizer) -> list[list[int]]:
    return [chat_tokenizer.encode_chat([{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.fixture(scope="module")
def ours(smol_forward: LlamaForward, chat_tokenizer: ChatTokenizer, prompts: list[list[int]]) -> list[Completion]:
    engine = Engine(smol_forward, chat_tokenizer, record_logits=True, num_pages=512, max_running=32)
    for i, p in enumerate(prompts):
        engine.add(str(i), p, SamplingParams(max_tokens=N_TOKENS, temperature=0.0))
    done = engine.run()
    return [done[str(i)] for i in range(len(prompts))]


def test_logits_match_transformers_within_tolerance_and_its_arg_max_is_our_greedy_token(
    hf_model: Any, ours: list[Completion]
) -> None:
    worst = 0.0
    for c in ours:
        assert c.logits is not None
        ids = torch.tensor([list(c.prompt_ids) + list(c.output_ids)])
        with torch.inference_mode():
            ref = hf_model(ids).logits[0].float()
        n = len(c.prompt_ids)
        ref_rows = ref[n - 1 : n - 1 + len(c.output_ids)]
        diff = float((ref_rows - c.logits).abs().max())
        worst = max(worst, diff)
        assert diff < LOGIT_ATOL, f"prompt {c.request_id}: max |logit difference| {diff}"
        assert ref_rows.argmax(dim=-1).tolist() == list(c.output_ids), f"prompt {c.request_id}"
        assert len(c.output_ids) == N_TOKENS or c.output_ids[-1] == 2  # 32 tokens or an early <|im_end|>
    assert worst > 0.0  # two different implementations: the comparison is not vacuous


def test_transformers_generate_gives_our_greedy_tokens(hf_model: Any, ours: list[Completion]) -> None:
    for c in ours[:2]:
        ids = torch.tensor([list(c.prompt_ids)])
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_TOKENS, do_sample=False)
        assert out[0, ids.shape[1] :].tolist() == list(c.output_ids), f"prompt {c.request_id}"
