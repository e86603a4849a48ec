"""API keys: a preferred provider region (routing uses it when a request names none)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gw_api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('region', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gw_api_keys', schema=None) as batch_op:
        batch_op.drop_column('region')
