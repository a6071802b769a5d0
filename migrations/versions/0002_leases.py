"""leases: which worker holds a database, and until when

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Several `migrate run` workers sharing one job table (PostgreSQL) divide the
databases between them: a worker claims a database by writing its name and a
lease end (seconds since the epoch, by the job database's clock) and renews it
while it works; a lease that ran out may be claimed by another worker.
``lease_owner`` is kept after staging: it says which worker staged the file.
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.Float(), nullable=True))
        batch_op.create_index('ix_databases_migration_state', ['migration_id', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.drop_index('ix_databases_migration_state')
        batch_op.drop_column('lease_until')
        batch_op.drop_column('lease_owner')
