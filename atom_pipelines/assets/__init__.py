"""The software-defined assets, one module per family: thin wrappers that turn partition keys into
mailbox windows, call the domain's work function and report what it did.

``outlook_messages`` -> ``email_entities`` -> ``entity_links`` -> ``entity_graph``; ``llm_key_status`` on the side.
"""

from atom_pipelines.assets.entity_graph import entity_graph, entity_links
from atom_pipelines.assets.extraction import email_entities, llm_key_status
from atom_pipelines.assets.mail import outlook_messages

#: The partitioned chain, in order: what backfills, schedules and sensors run.
PARTITIONED_CHAIN = (outlook_messages, email_entities, entity_links)

__all__ = ["PARTITIONED_CHAIN", "email_entities", "entity_graph", "entity_links", "llm_key_status", "outlook_messages"]
