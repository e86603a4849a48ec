"""Initial schema: projections, raw event log, recent blocks, checkpoint, undo log.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import common.index_models

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('balances',
    sa.Column('account', sa.String(length=42), nullable=False),
    sa.Column('credited', common.index_models.U256(), nullable=False),
    sa.Column('withdrawn', common.index_models.U256(), nullable=False),
    sa.Column('balance', common.index_models.U256(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('account')
    )
    op.create_table('blocks',
    sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.String(length=66), nullable=False),
    sa.Column('parent_hash', sa.String(length=66), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('number')
    )
    op.create_table('challenges',
    sa.Column('job_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('challenger', sa.String(length=42), nullable=False),
    sa.Column('bond', common.index_models.U256(), nullable=False),
    sa.Column('committee', sa.JSON(), nullable=False),
    sa.Column('commit_end', sa.BigInteger(), nullable=False),
    sa.Column('reveal_end', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('agree', sa.Integer(), nullable=False),
    sa.Column('disagree', sa.Integer(), nullable=False),
    sa.Column('provider_won', sa.Boolean(), nullable=True),
    sa.Column('by_governance', sa.Boolean(), nullable=True),
    sa.Column('slashed', common.index_models.U256(), nullable=True),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('resolved_block', sa.BigInteger(), nullable=True),
    sa.Column('resolved_tx', sa.String(length=66), nullable=True),
    sa.Column('resolved_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenges_challenger'), ['challenger'], unique=False)

    op.create_table('checkpoints',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('deployment', sa.String(length=42), nullable=False),
    sa.Column('start_block', sa.BigInteger(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(length=66), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('jobs',
    sa.Column('job_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('client', sa.String(length=42), nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('input_hash', sa.String(length=66), nullable=False),
    sa.Column('max_payment', common.index_models.U256(), nullable=False),
    sa.Column('price_per_unit', common.index_models.U256(), nullable=False),
    sa.Column('payment', common.index_models.U256(), nullable=False),
    sa.Column('collateral', common.index_models.U256(), nullable=False),
    sa.Column('deadline', sa.BigInteger(), nullable=False),
    sa.Column('challenge_end', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('output_hash', sa.String(length=66), nullable=False),
    sa.Column('units', common.index_models.U256(), nullable=False),
    sa.Column('relayer', sa.String(length=42), nullable=True),
    sa.Column('provider_amount', common.index_models.U256(), nullable=True),
    sa.Column('fee', common.index_models.U256(), nullable=True),
    sa.Column('client_refund', common.index_models.U256(), nullable=True),
    sa.Column('refund_amount', common.index_models.U256(), nullable=True),
    sa.Column('penalty', common.index_models.U256(), nullable=True),
    sa.Column('posted_block', sa.BigInteger(), nullable=True),
    sa.Column('posted_tx', sa.String(length=66), nullable=True),
    sa.Column('posted_at', sa.BigInteger(), nullable=True),
    sa.Column('claimed_block', sa.BigInteger(), nullable=True),
    sa.Column('claimed_tx', sa.String(length=66), nullable=True),
    sa.Column('claimed_at', sa.BigInteger(), nullable=True),
    sa.Column('delivered_block', sa.BigInteger(), nullable=True),
    sa.Column('delivered_tx', sa.String(length=66), nullable=True),
    sa.Column('delivered_at', sa.BigInteger(), nullable=True),
    sa.Column('challenged_block', sa.BigInteger(), nullable=True),
    sa.Column('challenged_tx', sa.String(length=66), nullable=True),
    sa.Column('challenged_at', sa.BigInteger(), nullable=True),
    sa.Column('finalized_block', sa.BigInteger(), nullable=True),
    sa.Column('finalized_tx', sa.String(length=66), nullable=True),
    sa.Column('finalized_at', sa.BigInteger(), nullable=True),
    sa.Column('refunded_block', sa.BigInteger(), nullable=True),
    sa.Column('refunded_tx', sa.String(length=66), nullable=True),
    sa.Column('refunded_at', sa.BigInteger(), nullable=True),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_client', ['client'], unique=False)
        batch_op.create_index('ix_jobs_provider', ['provider'], unique=False)
        batch_op.create_index('ix_jobs_status', ['status'], unique=False)

    op.create_table('models',
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('runtime_hash', sa.String(length=66), nullable=False),
    sa.Column('price_per_unit', common.index_models.U256(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('registered_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('model_id')
    )
    op.create_table('params',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('provider_models',
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('model_id', sa.String(length=66), nullable=False),
    sa.Column('serving', sa.Boolean(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'model_id')
    )
    op.create_table('providers',
    sa.Column('address', sa.String(length=42), nullable=False),
    sa.Column('endpoint', sa.String(), nullable=False),
    sa.Column('region', sa.String(), nullable=False),
    sa.Column('gpu_class', sa.String(), nullable=False),
    sa.Column('staked', common.index_models.U256(), nullable=False),
    sa.Column('locked', common.index_models.U256(), nullable=False),
    sa.Column('unbonding', common.index_models.U256(), nullable=False),
    sa.Column('unbond_ready_at', sa.BigInteger(), nullable=False),
    sa.Column('jailed_until', sa.BigInteger(), nullable=False),
    sa.Column('slashed_total', common.index_models.U256(), nullable=False),
    sa.Column('jobs_done', sa.Integer(), nullable=False),
    sa.Column('slashes', sa.Integer(), nullable=False),
    sa.Column('registered_block', sa.BigInteger(), nullable=False),
    sa.Column('updated_block', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('address')
    )
    op.create_table('raw_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(length=66), nullable=False),
    sa.Column('block_timestamp', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('tx_index', sa.Integer(), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('address', sa.String(length=42), nullable=False),
    sa.Column('contract', sa.String(length=32), nullable=False),
    sa.Column('event_name', sa.String(length=64), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('chain_id', 'tx_hash', 'log_index', name='uq_raw_events_chain_tx_log')
    )
    with op.batch_alter_table('raw_events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_raw_events_block', ['chain_id', 'block_number', 'log_index'], unique=False,
        )
        batch_op.create_index('ix_raw_events_name', ['event_name'], unique=False)

    op.create_table('receipts',
    sa.Column('job_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('output_hash', sa.String(length=66), nullable=False),
    sa.Column('units', common.index_models.U256(), nullable=False),
    sa.Column('model_hash', sa.String(length=66), nullable=False),
    sa.Column('runtime_hash', sa.String(length=66), nullable=False),
    sa.Column('gpu_class', sa.String(length=66), nullable=False),
    sa.Column('payment', common.index_models.U256(), nullable=False),
    sa.Column('challenge_end', sa.BigInteger(), nullable=False),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipts_provider'), ['provider'], unique=False)

    op.create_table('slashes',
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('log_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('provider', sa.String(length=42), nullable=False),
    sa.Column('recipient', sa.String(length=42), nullable=False),
    sa.Column('amount', common.index_models.U256(), nullable=False),
    sa.Column('from_staked', common.index_models.U256(), nullable=False),
    sa.Column('jailed_until', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tx_hash', 'log_index')
    )
    with op.batch_alter_table('slashes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slashes_provider'), ['provider'], unique=False)

    op.create_table('undo_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('table_name', sa.String(length=32), nullable=False),
    sa.Column('key', sa.JSON(), nullable=False),
    sa.Column('before', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('undo_log', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_undo_log_block_number'), ['block_number'], unique=False,
        )

    op.create_table('votes',
    sa.Column('job_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('voter', sa.String(length=42), nullable=False),
    sa.Column('commitment', sa.String(length=66), nullable=False),
    sa.Column('committed_block', sa.BigInteger(), nullable=False),
    sa.Column('committed_tx', sa.String(length=66), nullable=False),
    sa.Column('committed_at', sa.BigInteger(), nullable=False),
    sa.Column('output_hash', sa.String(length=66), nullable=True),
    sa.Column('agrees', sa.Boolean(), nullable=True),
    sa.Column('revealed_block', sa.BigInteger(), nullable=True),
    sa.Column('revealed_tx', sa.String(length=66), nullable=True),
    sa.Column('revealed_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('job_id', 'voter')
    )
    op.create_table('withdrawals',
    sa.Column('tx_hash', sa.String(length=66), nullable=False),
    sa.Column('log_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('account', sa.String(length=42), nullable=False),
    sa.Column('to', sa.String(length=42), nullable=False),
    sa.Column('amount', common.index_models.U256(), nullable=False),
    sa.Column('block', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tx_hash', 'log_index')
    )
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_withdrawals_account'), ['account'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('withdrawals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_withdrawals_account'))

    op.drop_table('withdrawals')
    op.drop_table('votes')
    with op.batch_alter_table('undo_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_undo_log_block_number'))

    op.drop_table('undo_log')
    with op.batch_alter_table('slashes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slashes_provider'))

    op.drop_table('slashes')
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipts_provider'))

    op.drop_table('receipts')
    with op.batch_alter_table('raw_events', schema=None) as batch_op:
        batch_op.drop_index('ix_raw_events_name')
        batch_op.drop_index('ix_raw_events_block')

    op.drop_table('raw_events')
    op.drop_table('providers')
    op.drop_table('provider_models')
    op.drop_table('params')
    op.drop_table('models')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status')
        batch_op.drop_index('ix_jobs_provider')
        batch_op.drop_index('ix_jobs_client')

    op.drop_table('jobs')
    op.drop_table('checkpoints')
    with op.batch_alter_table('challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenges_challenger'))

    op.drop_table('challenges')
    op.drop_table('blocks')
    op.drop_table('balances')
