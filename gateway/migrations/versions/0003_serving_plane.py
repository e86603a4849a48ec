"""Serving plane: answered requests (what vouchers cover) and the latest voucher per lane

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gw_serving_requests',
    sa.Column('request_id', sa.String(length=66), nullable=False),
    sa.Column('key_hash', sa.String(length=66), nullable=False),
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('units', sa.BigInteger(), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('charge_id', sa.BigInteger(), nullable=True),
    sa.Column('input_blob', sa.String(length=66), nullable=False),
    sa.Column('output_hash', sa.String(length=66), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    with op.batch_alter_table('gw_serving_requests', schema=None) as batch_op:
        batch_op.create_index('ix_gw_serving_requests_lane', ['payer', 'provider'], unique=False)
        batch_op.create_index(batch_op.f('ix_gw_serving_requests_key_hash'), ['key_hash'], unique=False)
    op.create_table('gw_serving_vouchers',
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('cumulative', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('signature', sa.String(length=132), nullable=False),
    sa.PrimaryKeyConstraint('payer', 'provider')
    )


def downgrade() -> None:
    op.drop_table('gw_serving_vouchers')
    with op.batch_alter_table('gw_serving_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_serving_requests_key_hash'))
        batch_op.drop_index('ix_gw_serving_requests_lane')
    op.drop_table('gw_serving_requests')
