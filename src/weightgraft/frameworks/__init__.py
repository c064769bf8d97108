"""Adapters for live models. Each module imports its framework, so import them only when used."""
