"""profiles: which application each database belongs to; templates in the migration

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Besides DeepVideoDiscovery, LightRAG and nano-graphrag files can be migrated; the
profile found for each file when it was scanned (``dvd``, ``lightrag``,
``nano-graphrag``, ``field``, ``template``) is kept, so the cutover can say whose
configuration must change. ``migrations.profile`` may now hold a whole
``--text-template``, so it becomes unbounded text.
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('profile', sa.String(length=40), nullable=True))
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.alter_column('profile', existing_type=sa.String(length=200), type_=sa.Text(),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('migrations', schema=None) as batch_op:
        batch_op.alter_column('profile', existing_type=sa.Text(), type_=sa.String(length=200),
                              existing_nullable=False)
    with op.batch_alter_table('databases', schema=None) as batch_op:
        batch_op.drop_column('profile')
