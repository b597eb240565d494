"""extraction_cache.content_hash -> prompt_hash: the cache key hashes the prompt sent to the model.

The value stored has always been the hash of the prompt sent to the model (extraction/cache.py
``prompt_hash``, named ``content_hash`` in code until 17e3010), not of the message's content: only the name
was wrong. So only the name changes; the values, and the cache keys computed from them, stay, and cached
answers keep being served. ``messages.content_hash`` is the message's content hash
and is not touched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite recreates the table (copying its rows); PostgreSQL runs ALTER TABLE ... RENAME COLUMN.
    with op.batch_alter_table("extraction_cache") as batch:
        batch.alter_column("content_hash", new_column_name="prompt_hash")


def downgrade() -> None:
    with op.batch_alter_table("extraction_cache") as batch:
        batch.alter_column("prompt_hash", new_column_name="content_hash")
