"""Typer apps: ``saxutil`` (users) and ``sax`` (launchers)."""
