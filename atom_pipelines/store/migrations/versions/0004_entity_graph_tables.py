"""The entity graph in tables: identity decisions, nodes, typed edges, their messages, communities, builds.

Issue 11: ``entity_graph`` writes the graph an analyst queries (any edge to its e-mails in one join) and
the audit trail of every identity merge, instead of only a GraphML file.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_decisions",
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("mention_key", sa.String(512), nullable=False),
        sa.Column("mention_name", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("person_key", sa.String(512)),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "message_id", "mention_key"),
    )
    op.create_index("ix_identity_person", "identity_decisions", ["person_key"])
    op.create_table(
        "graph_nodes",
        sa.Column("entity_key", sa.String(512), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("entity_type", sa.String(32), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("addresses", sa.JSON(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.Column("degree", sa.Integer(), nullable=False),
        sa.Column("weighted_degree", sa.Float(), nullable=False),
        sa.Column("pagerank", sa.Float(), nullable=False),
        sa.Column("betweenness", sa.Float()),
        sa.Column("community", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("entity_key"),
    )
    op.create_index("ix_graph_nodes_community", "graph_nodes", ["community"])
    op.create_index("ix_graph_nodes_type", "graph_nodes", ["entity_type"])
    op.create_table(
        "graph_edges",
        sa.Column("source_key", sa.String(512), nullable=False),
        sa.Column("target_key", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("directed", sa.Boolean(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("source_key", "target_key", "kind"),
    )
    op.create_index("ix_graph_edges_target", "graph_edges", ["target_key"])
    op.create_table(
        "graph_edge_messages",
        sa.Column("source_key", sa.String(512), nullable=False),
        sa.Column("target_key", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(80), nullable=False),
        sa.Column("mailbox", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(512), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("source_key", "target_key", "kind", "mailbox", "message_id"),
    )
    op.create_table(
        "graph_communities",
        sa.Column("community", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("top_members", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("community"),
    )
    op.create_table(
        "graph_builds",
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("communities_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("links", sa.Integer(), nullable=False),
        sa.Column("copies_removed", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("edges", sa.Integer(), nullable=False),
        sa.Column("changed_edges", sa.Integer(), nullable=False),
        sa.Column("name_mentions", sa.Integer(), nullable=False),
        sa.Column("names_merged", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("built_at"),
    )


def downgrade() -> None:
    op.drop_table("graph_builds")
    op.drop_table("graph_communities")
    op.drop_table("graph_edge_messages")
    op.drop_index("ix_graph_edges_target", table_name="graph_edges")
    op.drop_table("graph_edges")
    op.drop_index("ix_graph_nodes_type", table_name="graph_nodes")
    op.drop_index("ix_graph_nodes_community", table_name="graph_nodes")
    op.drop_table("graph_nodes")
    op.drop_index("ix_identity_person", table_name="identity_decisions")
    op.drop_table("identity_decisions")
