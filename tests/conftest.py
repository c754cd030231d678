"""Fixtures shared by the tests; helper functions live in tests/helpers.py."""

import os
from pathlib import Path

import pytest

# `make test` runs a pytest-xdist worker per core: each worker, and every process it starts, computes
# on one thread, rather than each spinning a thread per core against the others. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers import make_text  # noqa: E402 (torch loads here)


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory) -> None:
    """Encoded corpora go to a folder of this test session, not the user's cache (subprocesses too)."""
    os.environ["RNNEXP_CACHE_DIR"] = str(tmp_path_factory.mktemp("encoded"))


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (the order is otherwise kept): one started last would leave its worker
    running alone at the end of `make test`."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

