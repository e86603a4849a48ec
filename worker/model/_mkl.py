"""Intel MKL "strict conditional numerical reproducibility" for the CPU GEMMs.

With several threads MKL may split a GEMM's K dimension across threads for some shapes
(seen here for `[64, 1536] x [1536, 384]`), so the bytes of a result depend on the thread
count. MKL's strict CNR mode (`MKL_CBWR=AUTO,STRICT`) makes `?gemm` results independent of
the thread count at no measurable cost for these shapes. The mode can only be chosen before
MKL's first call in the process, so it is requested when `worker.model` is imported; a
process that ran an MKL GEMM earlier keeps MKL's default and `strict_cnr_active()` says so.
The results still depend on the CPU's instruction set branch (AVX2, AVX-512), which MKL picks.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_CBWR_AUTO = 2
_CBWR_STRICT = 0x10000
_CBWR_ALL = -1


@functools.cache
def _mkl_lib() -> ctypes.CDLL | None:
    try:
        import torch

        path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
        lib = ctypes.CDLL(str(path))
        lib.mkl_serv_cbwr_get.restype = ctypes.c_int
        lib.mkl_serv_cbwr_get.argtypes = [ctypes.c_int]
        lib.mkl_serv_cbwr_set.restype = ctypes.c_int
        lib.mkl_serv_cbwr_set.argtypes = [ctypes.c_int]
        return lib
    except (OSError, AttributeError):
        return None


def request_strict_cnr() -> None:
    """Ask MKL for strict CNR mode (a no-op if MKL is absent or already initialised)."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    lib = _mkl_lib()
    if lib is None:
        return
    if not lib.mkl_serv_cbwr_get(_CBWR_ALL) & _CBWR_STRICT:
        lib.mkl_serv_cbwr_set(_CBWR_AUTO | _CBWR_STRICT)
    if not strict_cnr_active():
        logger.warning(
            "MKL strict CNR mode is not active (MKL was used before worker.model was "
            "imported); CPU results may depend on the number of threads"
        )


def strict_cnr_active() -> bool:
    """Whether MKL runs in strict CNR mode (False when torch has no MKL)."""
    lib = _mkl_lib()
    return lib is not None and bool(lib.mkl_serv_cbwr_get(_CBWR_ALL) & _CBWR_STRICT)
