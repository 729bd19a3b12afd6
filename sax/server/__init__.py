"""The model server: registry, servable lifecycle, join loop, admission, stats."""
