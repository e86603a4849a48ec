"""Idempotency keys: a request's claim while it runs, its answer once done

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gw_idempotency',
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('idem_key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('owner', sa.String(length=32), nullable=False),
    sa.Column('lease_until', sa.Float(), nullable=False),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key_hash', 'idem_key')
    )
    with op.batch_alter_table('gw_idempotency', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_idempotency_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gw_idempotency', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_idempotency_created_at'))
    op.drop_table('gw_idempotency')
