"""mailbox_days: the progress of each mailbox-day per asset (issue 12, the mailbox partition scheme).

Dagster's partitions became mailboxes, so which days of a mailbox are done, failed or missing is kept here.
Existing stores start with no row: every mailbox's first run after the upgrade catches up from
ATOM_START_DATE (idempotent writes: the rows it replaces are the rows it writes).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_days",
        sa.Column("asset", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("root_run_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("asset", "mailbox", "day"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_days")
