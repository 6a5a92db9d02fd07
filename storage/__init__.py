"""SQLAlchemy tables and Alembic migrations (one metadata)."""
