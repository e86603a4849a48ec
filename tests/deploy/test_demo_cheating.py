"""The demo's cheating output: one bit flipped, same length, another hash (so the receipt lies)."""

from __future__ import annotations

import numpy as np

from contracts import jobio
from deploy.demo import perturb_output


def test_a_perturbed_output_keeps_its_shape_but_not_its_hash() -> None:
    out = jobio.encode_output((np.arange(2 * jobio.EMBEDDING_DIM).reshape(2, -1) / 7).astype(np.float32))
    bad = perturb_output(out)
    assert bad != out and len(bad) == len(out)
    assert sum(bin(a ^ b).count("1") for a, b in zip(bad, out, strict=True)) == 1
    assert jobio.output_hash(bad) != jobio.output_hash(out)
    assert np.allclose(jobio.decode_output(bad), jobio.decode_output(out), atol=1e-6)
