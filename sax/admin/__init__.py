"""The admin's control plane: cell state, placement, join sessions, watches."""
