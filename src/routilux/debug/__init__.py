"""Breakpoints, debug sessions and the safe expression language (no web imports here)."""
