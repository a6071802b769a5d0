"""job table: migrations, databases, batches, events

Revision ID: 0001
Revises: 
Create Date: 2026-11-23

The first schema: one row per migration, per database file in it, per committed
batch of new vectors, and an event log for `migrate status`.
"""
from alembic import op
import sqlalchemy as sa

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('migrations',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('requested_model', sa.String(length=200), nullable=False),
    sa.Column('native_dim', sa.Integer(), nullable=False),
    sa.Column('target_dim', sa.Integer(), nullable=False),
    sa.Column('max_model_len', sa.Integer(), nullable=True),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('roots', sa.JSON(), nullable=False),
    sa.Column('pattern', sa.String(length=200), nullable=False),
    sa.Column('profile', sa.String(length=200), nullable=False),
    sa.Column('records_embedded', sa.BigInteger(), nullable=False),
    sa.Column('tokens_embedded', sa.BigInteger(), nullable=False),
    sa.Column('embed_seconds', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_migrations_state'), ['state'], unique=False)

    op.create_table('databases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('migration_id', sa.String(length=40), nullable=False),
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('source_size', sa.BigInteger(), nullable=False),
    sa.Column('source_mtime_ns', sa.BigInteger(), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('source_dim', sa.Integer(), nullable=False),
    sa.Column('n_records', sa.Integer(), nullable=False),
    sa.Column('n_chars', sa.BigInteger(), nullable=False),
    sa.Column('n_done', sa.Integer(), nullable=False),
    sa.Column('truncated', sa.JSON(), nullable=True),
    sa.Column('staged_path', sa.String(length=4096), nullable=True),
    sa.Column('staged_sha256', sa.String(length=64), nullable=True),
    sa.Column('staged_size', sa.BigInteger(), nullable=True),
    sa.Column('backup_path', sa.String(length=4096), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['migration_id'], ['migrations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('migration_id', 'path', name='uq_databases_migration_path')
    )
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_databases_migration_id'), ['migration_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_databases_state'), ['state'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('migration_id', sa.String(length=40), nullable=True),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('level', sa.String(length=10), nullable=False),
    sa.Column('path', sa.String(length=4096), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['migration_id'], ['migrations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_migration_id'), ['migration_id'], unique=False)

    op.create_table('batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('database_id', sa.Integer(), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('vectors', sa.LargeBinary(), nullable=False),
    sa.Column('tokens', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['database_id'], ['databases.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('database_id', 'start', name='uq_batches_database_start')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_database_id'), ['database_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_database_id'))

    op.drop_table('batches')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_migration_id'))

    op.drop_table('events')
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_databases_state'))
        batch_op.drop_index(batch_op.f('ix_databases_migration_id'))

    op.drop_table('databases')
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_migrations_state'))

    op.drop_table('migrations')
