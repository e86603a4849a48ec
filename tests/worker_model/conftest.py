"""Fixtures of the model-runtime tests.

Triton kernels run through Triton's CPU interpreter here: `TRITON_INTERPRET=1` is set by the
root conftest before anything imports Triton. Nothing may reach a model hub: the reference
sentence-transformers model is loaded from the installed wheel's directory.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from typing import Any  # noqa: E402

import pytest  # noqa: E402

from worker.model.torch_path import TorchForward  # noqa: E402
from worker.model.weights import MiniLMTokenizer, MiniLMWeights, load_weights  # noqa: E402


@pytest.fixture(scope="session")
def weights_fp32() -> MiniLMWeights:
    return load_weights("fp32", "cpu")


@pytest.fixture(scope="session")
def tokenizer() -> MiniLMTokenizer:
    return MiniLMTokenizer()


@pytest.fixture(scope="session")
def torch_forward(weights_fp32: MiniLMWeights) -> TorchForward:
    return TorchForward(weights_fp32)


@pytest.fixture(scope="session")
def reference_model() -> Any:
    """sentence-transformers all-MiniLM-L6-v2 from the local package directory."""
    st = pytest.importorskip("sentence_transformers")
    from worker.model.weights import model_dir

    path = model_dir()
    if (path / "modules.json").is_file():
        return st.SentenceTransformer(str(path), device="cpu")
    modules = st.models
    transformer = modules.Transformer(str(path), max_seq_length=256)
    pooling = modules.Pooling(transformer.get_word_embedding_dimension(), "mean")
    return st.SentenceTransformer(modules=[transformer, pooling, modules.Normalize()], device="cpu")
