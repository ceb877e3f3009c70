"""Naive reference implementations: slow, obvious, checked against by the fast code."""
