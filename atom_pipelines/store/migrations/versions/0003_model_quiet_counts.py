"""model_quiet_counts: per partition and model, the messages with text answered with no text entity.

The rolling baseline of the ``model_not_gone_quiet`` check (issue 10): a partition whose quiet share jumps
far above the model's own recent share is a model that stopped reading, not a quiet day.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_quiet_counts",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(192), nullable=False),
        sa.Column("with_text", sa.Integer(), nullable=False),
        sa.Column("quiet", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "day", "model"),
    )
    op.create_index("ix_quiet_model_recorded", "model_quiet_counts", ["model", "recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_quiet_model_recorded", table_name="model_quiet_counts")
    op.drop_table("model_quiet_counts")
