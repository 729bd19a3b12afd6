"""Registered servable classes: what a published model's ``model_path`` names."""
