"""Fixtures shared by the tests; helper functions live in tests/helpers.py."""

import os
from pathlib import Path

import pytest

from tests.helpers import make_text


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory) -> None:
    """Encoded corpora go to a folder of this test session, not the user's cache (subprocesses too)."""
    os.environ["RNNEXP_CACHE_DIR"] = str(tmp_path_factory.mktemp("encoded"))


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path
