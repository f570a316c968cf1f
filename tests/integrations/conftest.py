"""One intra-op thread for these tests: the models here are tiny, and on a shared machine two
threads contending with other jobs make small backward passes many times slower."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (see ``one_thread`` in tests/conftest.py)."""
