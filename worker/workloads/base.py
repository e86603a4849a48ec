"""The workload interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from worker.model.errors import ModelError

Req = TypeVar("Req")
Out = TypeVar("Out")


class WorkloadError(ModelError, ValueError):
    """A request or output blob that a workload refuses (malformed, out of range)."""


class Workload(Protocol[Req, Out]):
    """What a worker node needs of a model.

    * `decode_request(blob)`: the request an input blob means (refuses malformed blobs);
      `encode_request(req)` its canonical bytes (`decode_request(encode_request(r)) == r`);
    * `execute(reqs)`: outputs of a batch, deterministic and batch-invariant;
    * `encode_output(req, out)`: the canonical output bytes (the receipt's output hash is
      their keccak256); `units(req, out)`: what the client pays for;
    * `compare(a, b)`: whether two output blobs agree (bitwise here: same numerics class);
    * `model_id()`, `runtime_descriptor()`: what the receipt names.
    """

    name: str

    def model_id(self) -> bytes: ...

    def runtime_descriptor(self) -> str: ...

    def decode_request(self, blob: bytes) -> Req: ...

    def encode_request(self, req: Req) -> bytes: ...

    def execute(self, reqs: Sequence[Req]) -> list[Out]: ...

    def encode_output(self, req: Req, out: Out) -> bytes: ...

    def units(self, req: Req, out: Out) -> int: ...

    def compare(self, a: bytes, b: bytes) -> bool: ...
