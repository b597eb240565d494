"""The store as the releases before migrations created it (``metadata.create_all`` of schema.py up to df9073a).

Written out table by table, never ``metadata.create_all``: a revision is a frozen fact about the past, and
schema.py keeps changing. Python-side column defaults (``default=0``) are not DDL and do not appear here.

Revision ID: 0001
Revises:
Create Date: 2026-12-01 (the schema of df9073a, 2026-11-28)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("internet_message_id", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sender_name", sa.Text(), nullable=True),
        sa.Column("sender_address", sa.Text(), nullable=True),
        sa.Column("to_recipients", sa.JSON(), nullable=False),
        sa.Column("cc_recipients", sa.JSON(), nullable=False),
        sa.Column("body_content_type", sa.String(8), nullable=False),
        sa.Column("body_raw", sa.Text(), nullable=False),
        sa.Column("new_text", sa.Text(), nullable=False),
        sa.Column("signature_text", sa.Text(), nullable=False),
        sa.Column("quoted_text", sa.Text(), nullable=False),
        sa.Column("text_basis", sa.String(16), nullable=False),
        sa.Column("extraction_text", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("change_key", sa.Text(), nullable=True),
        sa.Column("parent_folder_id", sa.Text(), nullable=True),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id"),
    )
    op.create_index("ix_messages_partition", "messages", ["mailbox", "day"])

    op.create_table(
        "extraction_outcomes",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("entity_count", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("dropped_entities", sa.Integer(), nullable=False),
        sa.Column("dropped_relations", sa.Integer(), nullable=False),
        sa.Column("raw_preview", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id", "attempt"),
    )
    op.create_index("ix_outcomes_partition", "extraction_outcomes", ["mailbox", "day"])

    op.create_table(
        "entities",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("entity_key", sa.String(512), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("roles", sa.String(128), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id", "entity_key"),
    )
    op.create_index("ix_entities_partition", "entities", ["mailbox", "day"])
    op.create_index("ix_entities_key", "entities", ["entity_key"])

    op.create_table(
        "entity_relations",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("source_key", sa.String(512), nullable=False),
        sa.Column("target_key", sa.String(512), nullable=False),
        sa.Column("relation", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id", "source_key", "target_key", "relation"),
    )
    op.create_index("ix_relations_partition", "entity_relations", ["mailbox", "day"])

    # Keyed by the hash of the cleaned content then; 0002 renames the column to what it really hashes.
    op.create_table(
        "extraction_cache",
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("prompt_version", sa.String(32), nullable=False),
        sa.Column("schema_hash", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("answer_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("cache_key"),
    )

    op.create_table(
        "entity_links",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("source_key", sa.String(512), nullable=False),
        sa.Column("target_key", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id", "source_key", "target_key", "kind"),
    )
    op.create_index("ix_links_partition", "entity_links", ["mailbox", "day"])

    op.create_table(
        "quarantined_records",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("origin", sa.String(1024), nullable=False),
        sa.Column("record_mailbox", sa.String(320), nullable=True),
        sa.Column("record_day", sa.Date(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw_excerpt", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "day", "origin"),
    )

    op.create_table(
        "graph_delta_state",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("folder", sa.String(128), nullable=False),
        sa.Column("delta_link", sa.Text(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "folder"),
    )

    op.create_table(
        "graph_pending_days",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("noted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "day"),
    )


def downgrade() -> None:
    for table in (
        "graph_pending_days",
        "graph_delta_state",
        "quarantined_records",
        "entity_links",
        "extraction_cache",
        "entity_relations",
        "entities",
        "extraction_outcomes",
        "messages",
    ):
        # Dropping a table drops its indexes with it, on both databases.
        op.drop_table(table)
