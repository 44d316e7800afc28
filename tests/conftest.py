"""Shared test fixtures: where the real evaluation data lives, and skipping when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ENCODERKIT_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the calling test with a reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real evaluation data not found at {p} (set ENCODERKIT_DATA or place ../shared/data beside the repo)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA
