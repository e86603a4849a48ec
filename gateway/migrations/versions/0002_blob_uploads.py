"""Blob holds: who stored a blob and until when (quota and retention)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gw_blob_uploads',
    sa.Column('blob_id', sa.String(length=66), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('blob_id', 'owner')
    )
    with op.batch_alter_table('gw_blob_uploads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_blob_uploads_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('gw_blob_uploads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_blob_uploads_expires_at'))
    op.drop_table('gw_blob_uploads')
