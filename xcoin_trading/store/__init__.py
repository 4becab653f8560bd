"""Transactional truth: SQLAlchemy 2.0 models, Alembic migrations, sessions. Same schema on SQLite and Postgres."""
