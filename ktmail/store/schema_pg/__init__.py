"""Numbered, append-only PostgreSQL migrations (store/postgresql.py applies them)."""
