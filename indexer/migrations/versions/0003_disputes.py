"""Disputes that hold against an adversary: terms fixed at posting, claim expiry, the draw
block and escalation deadline of a dispute, votes on (output, units) with a bond.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.index_models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('treasury', sa.String(length=42), nullable=True))
        batch_op.add_column(sa.Column('fee_bps', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('claim_expiry', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('gpu_class', sa.String(length=66), nullable=True))
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.add_column(sa.Column('draw_block', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('escalation_end', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('units', common.index_models.U256(), nullable=True))
        batch_op.add_column(sa.Column('bond', common.index_models.U256(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('votes', schema=None) as batch_op:
        batch_op.drop_column('bond')
        batch_op.drop_column('units')
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_column('escalation_end')
        batch_op.drop_column('draw_block')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('gpu_class')
        batch_op.drop_column('claim_expiry')
        batch_op.drop_column('fee_bps')
        batch_op.drop_column('treasury')
