"""Shared Triton device functions and the interpreter switch."""

# Triton kernels take untyped (pointer / constexpr) parameters.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton import knobs

FP_FUSION = True
"""Let the compiler contract a*b+c into FMA. Pinned explicitly on every launch because
Triton's default is changing (3.10); it is part of the numerics behind KERNEL_VERSION."""


def interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (`TRITON_INTERPRET=1`, read by
    Triton's own settings, ``triton.knobs``)."""
    return bool(knobs.runtime.interpret)


def check_device(t: torch.Tensor) -> None:
    """Kernels run on CUDA, or on CPU tensors under the interpreter."""
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1); got {t.device}")


@triton.jit
def erf_f32(a):
    """erf in fp32 without libdevice; max abs error 8e-8 (about 1 ulp).

    N. Juffa's minimax erff: an odd polynomial below |a| = 0.927734375 and
    1 - exp(poly(|a|)) above it. The same code runs compiled and interpreted.
    """
    t = tl.abs(a)
    s = a * a
    # |a| > 0.927734375
    r = -1.72853470e-5 * t + 3.83197126e-4
    u = -3.88396438e-3 * t + 2.42546219e-2
    r = r * s + u
    r = r * t - 1.06777877e-1
    r = r * t - 6.34846687e-1
    r = r * t - 1.28717512e-1
    r = r * t - t
    big = 1.0 - tl.exp(r)
    big = tl.where(a < 0.0, -big, big)
    # |a| <= 0.927734375
    q = s * -5.96761703e-4 + 4.99119423e-3
    q = q * s - 2.67681349e-2
    q = q * s + 1.12819925e-1
    q = q * s - 3.76125336e-1
    q = q * s + 1.28379166e-1
    q = q * a + a
    return tl.where(t > 0.927734375, big, q)


@triton.jit
def gelu_f32(x):
    """Exact (erf) GELU: x * 0.5 * (1 + erf(x / sqrt(2)))."""
    return x * 0.5 * (1.0 + erf_f32(x * 0.7071067811865476))
