"""Shared, readable building blocks for the numbered scripts (see README.md)."""
