"""Alembic migrations of the store (loaded by Alembic from this folder; see ``atom_pipelines.store.migrate``)."""
