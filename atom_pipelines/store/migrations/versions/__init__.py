"""The store's revisions, ``NNNN_what.py``; Alembic skips this file."""
