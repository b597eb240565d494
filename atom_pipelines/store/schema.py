"""Tables of the store. Primary keys come from the data (Graph ids, canonical entity keys), never positions.

Every partitioned table carries ``mailbox`` and ``day`` so a partition write can replace exactly its rows.
Deployed databases are upgraded by the Alembic revisions in ``migrations/versions/``, never by
``create_all``: a change here needs a revision that makes it (store/README.md, "Adding a migration"), and
``test_store_migrations.py`` fails until the revisions produce exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("day", Date, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("internet_message_id", Text),
    Column("conversation_id", Text),
    Column("subject", Text, nullable=False),
    Column("sender_name", Text),
    Column("sender_address", Text),
    Column("to_recipients", JSON, nullable=False),
    Column("cc_recipients", JSON, nullable=False),
    Column("body_content_type", String(8), nullable=False),
    Column("body_raw", Text, nullable=False),
    Column("new_text", Text, nullable=False),
    Column("signature_text", Text, nullable=False),
    Column("quoted_text", Text, nullable=False),
    Column("text_basis", String(16), nullable=False),
    # What extraction reads: new text + signature, or a bare forward's forwarded message (see cleaning.py).
    Column("extraction_text", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    # Graph's version of the item (changes with every edit); lets the delta sensor skip what is stored.
    Column("change_key", Text),
    Column("parent_folder_id", Text),
    Column("origin", Text, nullable=False),
    Index("ix_messages_partition", "mailbox", "day"),
)

# One row per (message, attempt): what each extraction attempt ended in. Nothing is inferred from absence.
extraction_outcomes = Table(
    "extraction_outcomes",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("day", Date, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("entity_count", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("dropped_entities", Integer, nullable=False, default=0),
    Column("dropped_relations", Integer, nullable=False, default=0),
    # The start of the raw answer, addresses and key-like strings masked: what the model really said.
    Column("raw_preview", Text, nullable=False, default=""),
    Index("ix_outcomes_partition", "mailbox", "day"),
)

# Per partition and model: how many messages with enough text the model's accepted answer found no text
# entity in. Kept so a partition's "quiet" share can be compared with the model's own recent baseline
# (a model that starts answering "nothing" for everything); replaced with its partition like the rest.
model_quiet_counts = Table(
    "model_quiet_counts",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("model", String(192), primary_key=True),  # "provider:model"
    Column("with_text", Integer, nullable=False),
    Column("quiet", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_quiet_model_recorded", "model", "recorded_at"),
)

# One row per entity mention: an entity as it appears in one message.
entities = Table(
    "entities",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("entity_key", String(512), primary_key=True),
    Column("day", Date, nullable=False),
    Column("name", Text, nullable=False),
    Column("entity_type", String(32), nullable=False),
    # Where the message mentions it, comma-separated, primary first: "sender", "to,greeting", "text".
    Column("roles", String(128), nullable=False),
    Column("evidence", Text, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Index("ix_entities_partition", "mailbox", "day"),
    Index("ix_entities_key", "entity_key"),
)

# Relations an LLM read in a message, between two of its (grounded) entities.
entity_relations = Table(
    "entity_relations",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("source_key", String(512), primary_key=True),
    Column("target_key", String(512), primary_key=True),
    Column("relation", String(64), primary_key=True),
    Column("day", Date, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Index("ix_relations_partition", "mailbox", "day"),
)

# Validated LLM answers by what was asked: (prompt hash: the hashed user message, prompt version, schema hash, provider,
# model). Only successes ("entities", "none_found") are admitted; a failed answer is never served again.
extraction_cache = Table(
    "extraction_cache",
    metadata,
    Column("cache_key", String(64), primary_key=True),
    Column("prompt_hash", String(64), nullable=False),
    Column("prompt_version", String(32), nullable=False),
    Column("schema_hash", String(32), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("answer_json", Text, nullable=False),
)

entity_links = Table(
    "entity_links",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("source_key", String(512), primary_key=True),
    Column("target_key", String(512), primary_key=True),
    Column("kind", String(80), primary_key=True),
    Column("day", Date, nullable=False),
    Column("weight", Float, nullable=False),
    Index("ix_links_partition", "mailbox", "day"),
)

# Records of the source that could not be accepted, one row per partition they may belong to. A record whose
# mailbox or day could not be read "may belong" to every partition of the unknown dimension: nothing hides.
# Partitioned like the rest, so re-running a partition after the export is fixed clears its rows.
quarantined_records = Table(
    "quarantined_records",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("origin", String(1024), primary_key=True),
    Column("record_mailbox", String(320)),
    Column("record_day", Date),
    Column("reason", Text, nullable=False),
    Column("raw_excerpt", Text, nullable=False),
)

# Where each mailbox folder's Graph delta sync stands: the deltaLink of its last complete round. In the
# database rather than a file beside the code, so every daemon and worker of a deployment shares it.
graph_delta_state = Table(
    "graph_delta_state",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("folder", String(128), primary_key=True),
    Column("delta_link", Text, nullable=False),
    Column("rounds", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Days Graph's delta said changed, waiting for a run to list them again. Noted in the same transaction as
# the deltaLink that reported them, cleared by the partition write of a listing that started after the
# note: a tick or run killed anywhere in between leaves the day pending, never forgotten.
graph_pending_days = Table(
    "graph_pending_days",
    metadata,
    Column("mailbox", String(320), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("noted_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
)

# The progress of each mailbox-day per asset of the chain (partitions.py): Dagster's partitions are mailboxes, so
# which days of a mailbox are done or failed is ours to keep. A day with no row is missing. A catch-up run
# syncs the days without a "done" row; a re-execution skips the days its root run already did.
mailbox_days = Table(
    "mailbox_days",
    metadata,
    Column("asset", String(64), primary_key=True),
    Column("mailbox", String(320), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("status", String(8), nullable=False),  # "done" or "failed"
    Column("rows", Integer, nullable=False),  # the asset's rows for the day (messages, entity mentions, links)
    Column("detail", Text, nullable=False),  # for "failed": the blocking checks or the error
    Column("run_id", String(64), nullable=False),
    Column("root_run_id", String(64), nullable=False),  # the run a re-execution descends from (itself if none)
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# -- the entity graph: written whole by each entity_graph build (not partitioned) ------------------------------

# What identity resolution decided for each body-name mention (merged into a person, or refused and why) and
# for each configured alias seen: the audit trail of every merge, and what ATOM_GRAPH_NEVER_MERGE undoes.
identity_decisions = Table(
    "identity_decisions",
    metadata,
    Column("mailbox", String(320), primary_key=True),  # "" for an alias (it holds in every mailbox)
    Column("message_id", String(512), primary_key=True),  # "" for an alias
    Column("mention_key", String(512), primary_key=True),
    Column("mention_name", Text, nullable=False),
    Column("decision", String(16), nullable=False),  # "merged" or "refused"
    Column("person_key", String(512)),  # the person merged into; NULL when refused
    Column("rule", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_identity_person", "person_key"),
)

# One row per resolved entity: the graph's nodes with what an analyst filters and ranks by.
graph_nodes = Table(
    "graph_nodes",
    metadata,
    Column("entity_key", String(512), primary_key=True),
    Column("label", Text, nullable=False),
    Column("entity_type", String(32), nullable=False),
    Column("names", JSON, nullable=False),  # every name seen, most frequent first
    Column("addresses", JSON, nullable=False),  # a person's addresses: its own, plus its aliases seen
    Column("message_count", Integer, nullable=False),  # distinct e-mails (copies in several mailboxes once)
    Column("first_seen", Date, nullable=False),
    Column("last_seen", Date, nullable=False),
    Column("degree", Integer, nullable=False),
    Column("weighted_degree", Float, nullable=False),
    Column("pagerank", Float, nullable=False),
    Column("betweenness", Float),  # NULL: the node arrived in an incremental build, computed at the next full one
    Column("community", Integer, nullable=False),  # 0 is the largest community
    Index("ix_graph_nodes_community", "community"),
    Index("ix_graph_nodes_type", "entity_type"),
)

# One row per (source, target, kind): typed edges, weight = distinct e-mails behind them.
graph_edges = Table(
    "graph_edges",
    metadata,
    Column("source_key", String(512), primary_key=True),
    Column("target_key", String(512), primary_key=True),
    Column("kind", String(80), primary_key=True),
    Column("directed", Boolean, nullable=False),  # co_mention is not: stored once, smaller key first
    Column("weight", Integer, nullable=False),
    Column("first_seen", Date, nullable=False),
    Column("last_seen", Date, nullable=False),
    Index("ix_graph_edges_target", "target_key"),
)

# Provenance: up to ATOM_GRAPH_EDGE_MESSAGES e-mails behind each edge, the latest first, one copy each (the
# first mailbox holding it). Join to ``messages`` on (mailbox, message_id) to read them.
graph_edge_messages = Table(
    "graph_edge_messages",
    metadata,
    Column("source_key", String(512), primary_key=True),
    Column("target_key", String(512), primary_key=True),
    Column("kind", String(80), primary_key=True),
    Column("mailbox", String(320), primary_key=True),
    Column("message_id", String(512), primary_key=True),
    Column("day", Date, nullable=False),
)

# Louvain communities of the last build that computed them, with their most central members.
graph_communities = Table(
    "graph_communities",
    metadata,
    Column("community", Integer, primary_key=True, autoincrement=False),
    Column("size", Integer, nullable=False),
    Column("people", Integer, nullable=False),
    Column("top_members", JSON, nullable=False),  # [{"entity_key", "label", "pagerank"}], highest first
)

# One row per entity_graph build: what it read, removed and decided, and whether communities were recomputed.
graph_builds = Table(
    "graph_builds",
    metadata,
    Column("built_at", DateTime(timezone=True), primary_key=True),
    Column("mode", String(16), nullable=False),  # "full" or "incremental"
    Column("reason", Text, nullable=False),
    Column("communities_at", DateTime(timezone=True), nullable=False),  # the full build whose communities hold
    Column("links", Integer, nullable=False),
    Column("copies_removed", Integer, nullable=False),  # link counts of the same e-mail in another mailbox
    Column("nodes", Integer, nullable=False),
    Column("edges", Integer, nullable=False),
    Column("changed_edges", Integer, nullable=False),
    Column("name_mentions", Integer, nullable=False),
    Column("names_merged", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
)

GRAPH_TABLES = (identity_decisions, graph_nodes, graph_edges, graph_edge_messages, graph_communities)

PARTITIONED_TABLES = (
    messages,
    extraction_outcomes,
    model_quiet_counts,
    entities,
    entity_relations,
    entity_links,
    quarantined_records,
)
