"""Relayed jobs: broadcast without waiting for mining, their outcome recorded for polling

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gw_relays',
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('client', sa.String(length=42), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('block_number', sa.BigInteger(), nullable=True),
    sa.Column('mined_tx', sa.String(length=66), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('revert', sa.String(length=64), nullable=True),
    sa.Column('message', sa.String(length=2000), nullable=True),
    sa.Column('charge_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tx_hash')
    )
    with op.batch_alter_table('gw_relays', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_relays_client'), ['client'], unique=False)
        batch_op.create_index(batch_op.f('ix_gw_relays_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gw_relays', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_relays_status'))
        batch_op.drop_index(batch_op.f('ix_gw_relays_client'))
    op.drop_table('gw_relays')
