"""spool: a batch's vectors live in a file beside the database, the row says where

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A batch's vectors (2 MB for 128 records at 4096 dims) were a blob in its row:
written through the job table's lock, into its journal and then its file, and
read back from it when the database was staged, waiting on every commit of the
other batches. They are now appended to the database's spool file and fsync'd
before the row is committed; the row keeps their byte offset and CRC-32.
``vectors`` becomes optional: rows written before this revision keep theirs
and are read as before.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spool_offset', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('crc32', sa.BigInteger(), nullable=True))
        batch_op.alter_column('vectors', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # spooled batches have no vectors in the table: a database with any starts over (its
    # done-count with them, so that no record counts as done without its vectors)
    spooled = "SELECT database_id FROM batches WHERE vectors IS NULL"
    op.execute(f"UPDATE databases SET n_done = 0 WHERE id IN ({spooled})")
    op.execute(f"DELETE FROM batches WHERE database_id IN ({spooled})")
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('vectors', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('crc32')
        batch_op.drop_column('spool_offset')
