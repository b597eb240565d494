"""Atom Pipelines: Outlook mail -> extracted entities -> neural links -> one entity graph, as Dagster assets.

``atom_pipelines.defs`` is the code location's Definitions (the contract in docs/architecture.md). It is loaded
on first access, so importing a helper module (the schema, the cleaner) does not build every asset.
"""

from typing import Any

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        from atom_pipelines.definitions import defs

        return defs
    raise AttributeError(f"module 'atom_pipelines' has no attribute {name!r}")
