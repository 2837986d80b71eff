"""hl7 intake: message version, size, content hash, error code, duplicate_of; report identifiers and procedure

Revision ID: 4dc51427e269
Revises: 6ddd9e57eb24
Create Date: 2026-11-26 15:01:08.520345
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '4dc51427e269'
down_revision = '6ddd9e57eb24'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.String(length=16), server_default='', nullable=False))
        batch_op.add_column(sa.Column('size_bytes', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('content_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('error_code', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('duplicate_of', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_hl7_messages_duplicate_of_hl7_messages'), 'hl7_messages', ['duplicate_of'], ['id'])

    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('patient_identifiers', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('procedure', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_column('procedure')
        batch_op.drop_column('patient_identifiers')

    with op.batch_alter_table('hl7_messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_hl7_messages_duplicate_of_hl7_messages'), type_='foreignkey')
        batch_op.drop_column('duplicate_of')
        batch_op.drop_column('error_code')
        batch_op.drop_column('content_hash')
        batch_op.drop_column('size_bytes')
        batch_op.drop_column('version')
