"""Portico's built-in plugins: each registers through the ``portico`` entry points like any other."""
