"""Thin adapters between persession and other libraries, each in its own module."""
