"""Synthetic AMI scenarios for the tracker tests (see README.md; ``build.py`` writes them)."""
