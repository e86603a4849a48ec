"""Initial schema: API key grants, charges, SIWE nonces, sessions

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gw_api_keys',
    sa.Column('key_hash', sa.String(length=66), nullable=False),
    sa.Column('wallet', sa.String(length=42), nullable=False),
    sa.Column('gateway', sa.String(length=42), nullable=False),
    sa.Column('spending_cap', sa.BigInteger(), nullable=False),
    sa.Column('spent', sa.BigInteger(), nullable=False),
    sa.Column('expiry', sa.BigInteger(), nullable=False),
    sa.Column('nonce', sa.String(length=78), nullable=False),
    sa.Column('signature', sa.String(length=4098), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('revoked_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('key_hash'),
    sa.UniqueConstraint('wallet', 'nonce', name='uq_gw_api_keys_wallet_nonce')
    )
    with op.batch_alter_table('gw_api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_api_keys_wallet'), ['wallet'], unique=False)

    op.create_table('gw_charges',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_hash', sa.String(length=66), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('pull_tx', sa.String(length=66), nullable=True),
    sa.Column('post_tx', sa.String(length=66), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('gw_charges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_charges_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_gw_charges_key_hash'), ['key_hash'], unique=False)

    op.create_table('gw_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=42), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
    )
    with op.batch_alter_table('gw_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gw_sessions_address'), ['address'], unique=False)

    op.create_table('gw_siwe_nonces',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('nonce')
    )


def downgrade() -> None:
    op.drop_table('gw_siwe_nonces')
    with op.batch_alter_table('gw_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_sessions_address'))

    op.drop_table('gw_sessions')
    with op.batch_alter_table('gw_charges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_charges_key_hash'))
        batch_op.drop_index(batch_op.f('ix_gw_charges_job_id'))

    op.drop_table('gw_charges')
    with op.batch_alter_table('gw_api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gw_api_keys_wallet'))

    op.drop_table('gw_api_keys')
