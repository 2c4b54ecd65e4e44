"""Fixtures of the reliability suite (the helpers live in helpers.py)."""

from .helpers import demo_model, demo_project, model, project  # noqa: F401  (pytest fixtures)
