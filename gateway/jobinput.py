"""The job input and output formats (:mod:`contracts.jobio`), with the gateway's limits and
errors. The job's ``inputHash`` is keccak256 of the exact input bytes, so the gateway never
re-serialises a client's blob, it only checks it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from contracts import jobio
from contracts.errors import InvalidJobInputError
from gateway.errors import BadRequestError, InvalidInputError

EMBEDDING_DIM = jobio.EMBEDDING_DIM
encode_input = jobio.encode_input


def decode_input(data: bytes, max_texts: int) -> list[str]:
    """The texts of a job input; raises :class:`InvalidInputError` unless the worker would accept it
    and it stays within the gateway's text limit."""
    try:
        texts = jobio.decode_input(data, max_bytes=max(len(data), 1))
    except InvalidJobInputError as exc:
        raise InvalidInputError(f"not a job input: {exc}") from None
    if len(texts) > max_texts:
        raise InvalidInputError(f"job input has {len(texts)} texts; the limit is {max_texts}",
                                count=len(texts), limit=max_texts)
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a JSON escape such as \\ud800 decodes to a lone surrogate
            raise BadRequestError(f"text {i} holds a lone UTF-16 surrogate: not valid Unicode",
                                    reason="invalid_unicode", index=i) from None
        if not text.strip():
            raise BadRequestError(f"text {i} is empty or only whitespace: the model has nothing to embed",
                                    reason="empty_input", index=i)
    return texts


def decode_output(data: bytes) -> npt.NDArray[np.float32]:
    """Output bytes as ``[n, 384]`` float32; raises ``ValueError`` on a ragged length."""
    try:
        return jobio.decode_output(data)
    except InvalidJobInputError as exc:
        raise ValueError(str(exc)) from None
