"""Batch encoding on existing distributed engines (Ray Data)."""
