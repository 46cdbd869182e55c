"""Persistence of the scheduler: schema, engine factory, repository (SQLite or PostgreSQL)."""
