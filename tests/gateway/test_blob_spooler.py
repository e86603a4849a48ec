"""The serving plane's blob spooler stores every served request's blobs and holds them for the
retention time, renewing an existing hold to the later expiry and never shortening it, in one
statement per flush on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from sqlmodel import Session, select

from gateway import store
from gateway.blobs import GatewayBlobs, LocalBlobStore
from gateway.retention import BlobPolicy
from gateway.serving import BlobSpooler


def test_served_blobs_are_stored_and_held_and_a_renewal_never_shortens_a_hold(db_url: str, tmp_path: Path) -> None:
    engine = store.make_engine(db_url)
    store.migrate(engine)
    blobs = GatewayBlobs(LocalBlobStore(tmp_path / "blobs"), 1 << 20)
    ctx = SimpleNamespace(db_engine=engine, blobs=blobs, blob_policy=BlobPolicy(3600, 1 << 30, 1 << 30, 1 << 40))
    spooler = BlobSpooler(ctx)
    a, b = b'{"texts":["a"]}', os.urandom(1536)
    spooler.put(a, "paid:0xPayer")
    spooler.put(b, "paid:0xPayer")
    spooler.put(a, "paid:0xPayer")  # the same input twice in one flush: one hold
    spooler.put(a, "paid:0xOther")
    spooler.flush()
    with Session(engine) as s:
        rows = {(r.blob_id, r.owner): r for r in s.exec(select(store.BlobUpload))}
    bid_a, bid_b = blobs.store.put(a), blobs.store.put(b)
    assert set(rows) == {(bid_a, "paid:0xPayer"), (bid_b, "paid:0xPayer"), (bid_a, "paid:0xOther")}
    assert rows[(bid_b, "paid:0xPayer")].size == 1536 and blobs.get(bid_b) == b
    first = rows[(bid_a, "paid:0xPayer")]
    assert first.expires_at - first.created_at == 3600

    with store.session(engine) as s:  # a hold that already runs longer (an upload's, say)
        row = s.get(store.BlobUpload, (bid_b, "paid:0xPayer"))
        assert row is not None
        row.expires_at += 10**6
        s.add(row)
    ctx.blob_policy = BlobPolicy(7200, 1 << 30, 1 << 30, 1 << 40)
    spooler.put(a, "paid:0xPayer")
    spooler.put(b, "paid:0xPayer")
    spooler.stop()
    with Session(engine) as s:
        renewed = {(r.blob_id, r.owner): r for r in s.exec(select(store.BlobUpload))}
    assert renewed[(bid_a, "paid:0xPayer")].expires_at >= first.created_at + 7200  # renewed to the later expiry
    assert renewed[(bid_a, "paid:0xPayer")].created_at == first.created_at
    assert renewed[(bid_b, "paid:0xPayer")].expires_at == rows[(bid_b, "paid:0xPayer")].expires_at + 10**6
    assert spooler.written == 6
    engine.dispose()
