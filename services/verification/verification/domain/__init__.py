"""Verification rules: pure, no I/O."""
