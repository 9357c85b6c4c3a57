"""Renderers that turn a RunResult into reports for people."""
