"""Shared network pieces used by several families (one copy of each)."""
