"""Fixtures and helpers shared by the test packages (registered as plugins in tests/conftest.py)."""
