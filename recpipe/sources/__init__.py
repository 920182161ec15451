"""Data sources: each reads one kind of input into raw tables (ids not yet mapped)."""
