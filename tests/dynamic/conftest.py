"""One intra-op thread for these tests: the models and tensors here are tiny, and on a shared
machine two threads contending with other jobs make small backward passes ~20x slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
