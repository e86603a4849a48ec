"""The native EIP-712 path (:mod:`contracts.typed_digest`) gives the bytes eth_account gives:
digests, signatures and recovered signers, on random receipts; what it does not encode exactly
falls back to eth_account, errors included."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hexbytes import HexBytes
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import settlement as st_mod
from contracts import typed_digest
from contracts.settlement import PaymentReceipt, Voucher, WorkReceipt

KEY = "0x" + "42" * 32
N = typed_digest._N

addresses = st.binary(min_size=20, max_size=20).map(lambda b: str(Account.from_key(keccak(b)).address))
words = st.binary(min_size=32, max_size=32)


def slow_digest(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any]) -> bytes:
    m = encode_typed_data(domain, types, message)
    return bytes(keccak(b"\x19" + m.version + m.header + m.body))


def slow_sign(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any]) -> bytes:
    return bytes(Account.sign_typed_data(KEY, domain, types, message).signature)


@settings(max_examples=60, deadline=None)
@given(payer=addresses, provider=addresses, rid=words, value=st.integers(0, 2**128 - 1),
       ts=st.integers(0, 2**64 - 1), chain_id=st.integers(1, 2**64), escrow=addresses)
def test_payment_receipts_digest_sign_and_recover_as_eth_account_does(payer: str, provider: str, rid: bytes,
                                                                      value: int, ts: int, chain_id: int,
                                                                      escrow: str) -> None:
    r = PaymentReceipt(payer, provider, rid, value, ts)
    domain = st_mod.escrow_domain(chain_id, escrow)
    fast = typed_digest.digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, r.message())
    assert fast == slow_digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, r.message())
    sig = st_mod.sign_payment_receipt(KEY, r, chain_id, escrow)
    assert sig == slow_sign(domain, st_mod.PAYMENT_RECEIPT_TYPES, r.message())
    assert st_mod.recover_payment_receipt(r, sig, chain_id, escrow) == Account.from_key(KEY).address


@settings(max_examples=60, deadline=None)
@given(rid=words, payer=addresses, mid=words, ih=words, oh=words, units=st.integers(0, 2**64 - 1),
       value=st.integers(0, 2**96 - 1), rh=words, nc=words, settlement=addresses)
def test_work_receipts_digest_and_sign_as_eth_account_does(rid: bytes, payer: str, mid: bytes, ih: bytes, oh: bytes,
                                                           units: int, value: int, rh: bytes, nc: bytes,
                                                           settlement: str) -> None:
    w = WorkReceipt(rid, payer, mid, ih, oh, units, value, rh, nc)
    domain = st_mod.settlement_domain(31337, settlement)
    assert st_mod.work_receipt_digest(w, 31337, settlement) == slow_digest(domain, st_mod.WORK_RECEIPT_TYPES,
                                                                           w.message())
    sig = st_mod.sign_work_receipt(KEY, w, 31337, settlement)
    assert sig == slow_sign(domain, st_mod.WORK_RECEIPT_TYPES, w.message())
    assert st_mod.recover_work_receipt(w, sig, 31337, settlement) == Account.from_key(KEY).address


def test_vouchers_and_signer_authorizations_sign_as_eth_account_does() -> None:
    escrow = "0x" + "ab" * 20
    v = Voucher(str(Account.from_key(KEY).address), "0x" + "cd" * 20, 12345, 678)
    domain = st_mod.escrow_domain(31337, escrow)
    assert st_mod.sign_voucher(KEY, v, 31337, escrow).signature == slow_sign(domain, st_mod.VOUCHER_TYPES, v.message())
    auth = {"payer": v.payer, "expiry": 99}
    assert st_mod.sign_signer_authorization(KEY, v.payer, 99, 31337, escrow) == slow_sign(
        domain, st_mod.SIGNER_AUTHORIZATION_TYPES, auth)


def test_a_high_s_signature_recovers_the_same_signer_either_way() -> None:
    r = PaymentReceipt("0x" + "11" * 20, "0x" + "22" * 20, b"\x07" * 32, 5, 6)
    escrow = "0x" + "33" * 20
    sig = st_mod.sign_payment_receipt(KEY, r, 1, escrow)
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    slow = Account.recover_message(encode_typed_data(st_mod.escrow_domain(1, escrow), st_mod.PAYMENT_RECEIPT_TYPES,
                                                     r.message()), signature=HexBytes(flipped))
    assert st_mod.recover_payment_receipt(r, flipped, 1, escrow) == slow == Account.from_key(KEY).address


@pytest.mark.parametrize("change", [
    {"payer": "0x" + "aB" * 20},  # mixed case that is not the checksum (eth_utils accepts it: so do we)
    {"value": 2**128},  # out of uint128
    {"value": -1},
    {"requestId": b"\x01" * 31},  # not 32 bytes
    {"payer": "not an address"},
])
def test_odd_values_digest_as_eth_account_digests_them_or_fail_as_it_fails(change: dict[str, Any]) -> None:
    domain = st_mod.escrow_domain(1, "0x" + "33" * 20)
    msg = {**PaymentReceipt("0x" + "11" * 20, "0x" + "22" * 20, b"\x07" * 32, 5, 6).message(), **change}
    try:
        expected: Any = slow_digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, msg)
    except Exception as exc:  # noqa: BLE001 - whatever eth_account raises, the fallback raises too
        expected = type(exc)
    if isinstance(expected, bytes):
        assert st_mod._digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, msg) == expected
    else:
        assert typed_digest.digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, msg) is None
        with pytest.raises(expected):
            st_mod._digest(domain, st_mod.PAYMENT_RECEIPT_TYPES, msg)


@pytest.mark.parametrize("sig", [b"\x01" * 64 + b"\x1b", bytes(64) + b"\x1b", b"\x01" * 64 + b"\x05", b"\x01" * 10])
def test_a_malformed_signature_is_refused_as_eth_account_refuses_it(sig: bytes) -> None:
    r = PaymentReceipt("0x" + "11" * 20, "0x" + "22" * 20, b"\x07" * 32, 5, 6)
    escrow = "0x" + "33" * 20
    try:
        expected: Any = str(Account.recover_message(encode_typed_data(
            st_mod.escrow_domain(1, escrow), st_mod.PAYMENT_RECEIPT_TYPES, r.message()), signature=HexBytes(sig)))
    except Exception as exc:  # noqa: BLE001
        expected = type(exc)
    if isinstance(expected, str):
        assert st_mod.recover_payment_receipt(r, sig, 1, escrow) == expected
    else:
        with pytest.raises(expected):
            st_mod.recover_payment_receipt(r, sig, 1, escrow)
