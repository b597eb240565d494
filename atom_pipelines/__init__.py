"""Atom Pipelines: Outlook mail -> extracted entities -> neural links -> one entity graph, as Dagster assets."""

from atom_pipelines.definitions import defs

__all__ = ["defs"]
