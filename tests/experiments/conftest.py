"""Fixtures of the experiment tests: the real data sets under ``../shared/data`` (each test that
needs one is skipped, with the path it looked for, when it is missing) and one intra-op thread.

One thread: the models here are tiny, and on a shared 2-core machine two torch threads contending
with other jobs make a CNN step ~100x slower (``maskwise demo --fast`` takes ~30 s instead of
~4 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.experiments.synth import shared


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs on one torch thread (see ``one_thread`` in tests/conftest.py)."""


@pytest.fixture
def trec_dir() -> Path:
    return shared("text", "trec")


@pytest.fixture
def sst2_dir() -> Path:
    return shared("text", "sst2")


@pytest.fixture
def fsdd_dir() -> Path:
    return shared("speech", "fsdd")


@pytest.fixture
def fashion_mnist_dir() -> Path:
    return shared("image", "fashion_mnist")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The speech feature cache, redirected into the test's temporary directory."""
    path = tmp_path / "cache"
    monkeypatch.setenv("MASKWISE_CACHE", str(path))
    return path
