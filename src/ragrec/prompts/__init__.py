"""Scenario- and task-specific prompt templates and their renderer (see issue #4)."""
