"""EIP-712 digests, signatures and recoveries of flat typed structs at native speed.

Every serving-plane request signs and recovers two receipts. ``eth_account`` builds each
digest generically (type parsing, ``eth_abi`` encoding, a dozen keccaks, the domain separator
re-hashed every time): about 1 ms of CPU per signature or recovery even with libsecp256k1
underneath. The receipts, vouchers and authorizations of :mod:`contracts.settlement` are flat
structs of static fields (``address``, ``bytesN``, ``uintN``, ``bool``), whose encoding is one
32-byte word per field. This module encodes them directly, caches the type hashes and domain
separators, and signs and recovers with coincurve (libsecp256k1) on the digest.

It returns None (the caller then takes ``eth_account``'s path, errors included) for anything
it does not encode exactly as ``eth_account`` would: nested or dynamic types, a domain with
other fields, a value out of its type's range, an address that is not one (or whose mixed case
is not its checksum). ``tests/contracts/test_typed_digest.py`` checks digests, signatures and
recoveries against ``eth_account`` on random values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import coincurve
from eth_utils import is_address, keccak, to_canonical_address, to_checksum_address

#: the secp256k1 group order
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_DOMAIN_FIELDS = ("name", "version", "chainId", "verifyingContract")
_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_ZERO12 = bytes(12)


@lru_cache(maxsize=4096)
def _address_word(value: str) -> bytes | None:
    if not is_address(value):  # checks the checksum of a mixed-case address, like eth_abi
        return None
    return _ZERO12 + to_canonical_address(value)


def _word(typ: str, value: Any) -> bytes | None:
    """The ABI word of a static value, or None when it is not one exactly."""
    if typ == "address":
        return _address_word(value) if isinstance(value, str) else None
    if typ.startswith("uint"):
        bits = int(typ[4:] or 256)
        if type(value) is not int or not 0 <= value < (1 << bits):
            return None
        return value.to_bytes(32, "big")
    if typ.startswith("bytes") and typ[5:].isdigit():
        n = int(typ[5:])
        if not isinstance(value, bytes) or len(value) != n:
            return None
        return value.ljust(32, b"\x00")
    if typ == "bool":
        return (b"\x00" * 31 + (b"\x01" if value else b"\x00")) if type(value) is bool else None
    return None


_STATIC = ("address", "bool")


@lru_cache(maxsize=256)
def _type_hash(primary: str, fields: tuple[tuple[str, str], ...]) -> bytes | None:
    for _, typ in fields:
        if not (typ in _STATIC or (typ.startswith("uint") and (typ[4:] or "256").isdigit())
                or (typ.startswith("bytes") and typ[5:].isdigit() and 1 <= int(typ[5:]) <= 32)):
            return None
    return bytes(keccak(f"{primary}({','.join(f'{t} {n}' for n, t in fields)})".encode()))


@lru_cache(maxsize=256)
def _domain_separator(name: str, version: str, chain_id: int, contract: str) -> bytes | None:
    addr = _address_word(contract)
    if addr is None or not 0 <= chain_id < (1 << 256):
        return None
    return bytes(keccak(_DOMAIN_TYPEHASH + keccak(name.encode()) + keccak(version.encode())
                        + chain_id.to_bytes(32, "big") + addr))


def digest(domain: dict[str, Any], types: dict[str, Any], message: dict[str, Any]) -> bytes | None:
    """The EIP-712 digest of ``message`` (a flat struct of static fields), or None."""
    if len(types) != 1 or tuple(domain) != _DOMAIN_FIELDS:
        return None
    ((primary, spec),) = types.items()
    name, version, chain_id, contract = (domain[k] for k in _DOMAIN_FIELDS)
    if not (isinstance(name, str) and isinstance(version, str) and type(chain_id) is int
            and isinstance(contract, str)):
        return None
    fields = tuple((f["name"], f["type"]) for f in spec)
    th = _type_hash(primary, fields)
    sep = _domain_separator(name, version, chain_id, contract)
    if th is None or sep is None or len(message) != len(fields):
        return None
    words = [th]
    for n, t in fields:
        if n not in message:
            return None
        w = _word(t, message[n])
        if w is None:
            return None
        words.append(w)
    return bytes(keccak(b"\x19\x01" + sep + keccak(b"".join(words))))


@lru_cache(maxsize=64)
def _private_key(key: str | bytes) -> coincurve.PrivateKey:
    raw = key if isinstance(key, bytes) else bytes.fromhex(key[2:] if key.startswith(("0x", "0X")) else key)
    return coincurve.PrivateKey(raw)


def sign(key: str | bytes, digest32: bytes) -> bytes:
    """The 65-byte signature ``r || s || v`` (v 27 or 28, low s) of a digest, as ``eth_account``
    signs it (RFC 6979 nonces: the same bytes)."""
    sig = _private_key(key).sign_recoverable(digest32, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover(digest32: bytes, signature: bytes) -> str | None:
    """The checksummed address that signed ``digest32``, or None when the signature is not in
    the canonical 65-byte form (v 27 or 28, 0 < r, s < n) or does not recover: the caller then
    asks ``eth_account``, which accepts or refuses it as it always did."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if not (0 < r < _N and 0 < s < _N):
        return None
    try:
        pub = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes([signature[64] - 27]), digest32,
                                                            hasher=None)
    except Exception:  # noqa: BLE001 - no point on the curve: eth_account's path raises its own error
        return None
    return str(to_checksum_address(keccak(pub.format(compressed=False)[1:])[-20:]))
