"""Every request costs EIP-712 signatures and recoveries: they must run on libsecp256k1
(coincurve), not eth-keys' pure-Python fallback, which is about 16x slower."""

from __future__ import annotations

from eth_account import Account
from eth_keys.backends import get_backend
from eth_keys.backends.coincurve import CoinCurveECCBackend

from contracts import eip712
from contracts.types import Receipt


def test_eth_keys_uses_the_coincurve_backend() -> None:
    assert isinstance(get_backend(), CoinCurveECCBackend)


def test_an_account_signs_receipts_through_coincurve() -> None:
    acct = Account.create()
    assert isinstance(acct._key_obj.backend, CoinCurveECCBackend)
    rec = Receipt(1, b"\x01" * 32, 10, b"\x02" * 32, b"\x03" * 32, b"cpu".ljust(32, b"\x00"))
    sig = eip712.sign_receipt(acct.key, rec, 31337, "0x" + "11" * 20)
    assert len(sig) == 65
