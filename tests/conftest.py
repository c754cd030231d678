"""Fixtures shared by the tests; helper functions live in tests/helpers.py."""

from pathlib import Path

import pytest

from tests.helpers import make_text


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path
