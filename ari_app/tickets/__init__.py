"""Tickets and call records: SQLAlchemy models, services, the write queue, notifications."""
