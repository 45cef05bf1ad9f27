"""Database access: engine, table models and Alembic migrations."""
