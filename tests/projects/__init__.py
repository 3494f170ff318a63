"""Deployment-shaped projects (see _common.py)."""
