"""Helpers shared by the tests: builders, readers of what is stored, and stand-ins for the
outside world. Fixtures stay in tests/conftest.py, which imports what it needs from here."""
