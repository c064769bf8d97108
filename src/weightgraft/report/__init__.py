"""Rendering of results (rich tables, JSON, PNG plots). Results are data; rendering lives here."""
