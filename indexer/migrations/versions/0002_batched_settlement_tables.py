"""Batched settlement: escrow deposits, lanes, signers, provider bonds, collections, batches,
leaf cases, provider prices and price ceilings (PaymentEscrow and BatchSettlement events).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.index_models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('batch_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('root', sa.String(length=66), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('units', common.index_models.U256(), nullable=False),
    sa.Column('value', common.index_models.U256(), nullable=False),
    sa.Column('committed_at', sa.BigInteger(), nullable=False),
    sa.Column('challenge_end', sa.BigInteger(), nullable=False),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.PrimaryKeyConstraint('batch_id')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_provider'), ['provider'], unique=False)

    op.create_table('escrow_collections',
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('log_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('amount', common.index_models.U256(), nullable=False),
    sa.Column('collected', common.index_models.U256(), nullable=False),
    sa.Column('cumulative_value', common.index_models.U256(), nullable=False),
    sa.Column('lane_balance', common.index_models.U256(), nullable=False),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tx_hash', 'log_index')
    )
    with op.batch_alter_table('escrow_collections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_escrow_collections_payer'), ['payer'], unique=False)
        batch_op.create_index(batch_op.f('ix_escrow_collections_provider'), ['provider'], unique=False)

    op.create_table('escrow_deposits',
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('deposit', common.index_models.U256(), nullable=False),
    sa.Column('deposited_total', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('payer')
    )
    op.create_table('escrow_lanes',
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('balance', common.index_models.U256(), nullable=False),
    sa.Column('collected', common.index_models.U256(), nullable=False),
    sa.Column('thawing', common.index_models.U256(), nullable=False),
    sa.Column('thaw_end', sa.BigInteger(), nullable=False),
    sa.Column('allocated', common.index_models.U256(), nullable=False),
    sa.Column('withdrawn', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('payer', 'provider')
    )
    op.create_table('escrow_signers',
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('signer', sa.String(length=42), nullable=False),
    sa.Column('expiry', sa.BigInteger(), nullable=False),
    sa.Column('thaw_end', sa.BigInteger(), nullable=False),
    sa.Column('can_allocate', sa.Boolean(), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('payer', 'signer')
    )
    op.create_table('leaf_cases',
    sa.Column('batch_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('leaf_index', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('challenger', sa.String(length=42), nullable=False),
    sa.Column('payer', sa.String(length=42), nullable=False),
    sa.Column('value', common.index_models.U256(), nullable=False),
    sa.Column('output_hash', sa.String(length=66), nullable=False),
    sa.Column('bond', common.index_models.U256(), nullable=False),
    sa.Column('deadline', sa.BigInteger(), nullable=False),
    sa.Column('withheld', sa.Boolean(), nullable=False),
    sa.Column('by_default', sa.Boolean(), nullable=False),
    sa.Column('slashed', common.index_models.U256(), nullable=False),
    sa.Column('refunded', common.index_models.U256(), nullable=False),
    sa.Column('challenger_reward', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('batch_id', 'leaf_index')
    )
    op.create_table('price_ceilings',
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('ceiling', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('model_id')
    )
    op.create_table('provider_bonds',
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('amount', common.index_models.U256(), nullable=False),
    sa.Column('thawing', common.index_models.U256(), nullable=False),
    sa.Column('thaw_end', sa.BigInteger(), nullable=False),
    sa.Column('seized_total', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('provider')
    )
    op.create_table('provider_prices',
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('price', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'model_id')
    )


def downgrade() -> None:
    op.drop_table('provider_prices')
    op.drop_table('provider_bonds')
    op.drop_table('price_ceilings')
    op.drop_table('leaf_cases')
    op.drop_table('escrow_signers')
    op.drop_table('escrow_lanes')
    op.drop_table('escrow_deposits')
    with op.batch_alter_table('escrow_collections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_escrow_collections_provider'))
        batch_op.drop_index(batch_op.f('ix_escrow_collections_payer'))

    op.drop_table('escrow_collections')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_provider'))

    op.drop_table('batches')
