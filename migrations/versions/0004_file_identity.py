"""file identity, a claim index, truncated NULL: what scales to a million databases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Cutover must know that the live file is the one that was embedded and that the
staged file is the one that was verified. Hashing both again costs a read of
every byte; a file whose size, mtime, ctime and inode all match what was
recorded is that file, since any write changes its ctime and nothing can set
ctime back. So the source's ctime and inode are kept beside its size and
mtime, and the staged file's mtime, ctime and inode beside its size. Rows from
before this revision have them empty and are hashed as before.

A claim walks ``(migration_id, state, id)`` in id order and stops after a few
rows; the index it replaces, ``(migration_id, state)``, left PostgreSQL to sort
every pending row. ``truncated`` held the JSON text 'null' for every database
without truncated records, so finding the few that have some decoded them all;
it is SQL NULL now.
"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = ('source_ctime_ns', 'source_ino', 'staged_mtime_ns', 'staged_ctime_ns', 'staged_ino')


def upgrade() -> None:
    with op.batch_alter_table('databases', schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), nullable=True))
        batch_op.drop_index('ix_databases_migration_state')
        batch_op.create_index('ix_databases_migration_state_id', ['migration_id', 'state', 'id'])
    op.execute("UPDATE databases SET truncated = NULL WHERE truncated IS NOT NULL AND "
               "CAST(truncated AS TEXT) = 'null'")


def downgrade() -> None:
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.drop_index('ix_databases_migration_state_id')
        batch_op.create_index('ix_databases_migration_state', ['migration_id', 'state'])
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
