"""The reference providers. Each module imports its driver itself, so drivers stay extras."""
