"""A fresh store on a real SQLite file (in a folder the store has to create) for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from forecasting.store import Store


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "data" / "headroom.db") as opened:
        yield opened
