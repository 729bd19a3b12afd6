"""Shared fixtures: the GCS emulator (tests/gcs.py)."""

pytest_plugins = ["tests.gcs"]
