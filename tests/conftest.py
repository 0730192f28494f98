"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread; intra-op threads also stall badly on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def private_engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Caches the engine writes (the sudoku bank) go to a temporary folder, never the user's ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ENGINE_CACHE", str(tmp_path_factory.mktemp("engine_cache")))
    yield
    mp.undo()
