"""Locate the contract files: shipped inside the wheel, or beside the package in the repository."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_CONTRACTS = _PACKAGE_DIR.parent.parent  # contracts/ when installed from the repository


def contract_path(relative: str) -> Path:
    """Path of a contract file such as `topics.yaml` or `policies/shanghai-2024.yaml`."""
    for base in (_PACKAGE_DIR / "data", _REPO_CONTRACTS):
        candidate = base / relative
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"contract file {relative!r} not found")
