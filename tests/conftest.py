"""Shared fixtures: the real-world corpus beside the project, seeded random data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

ROOT = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """``$WEIGHTGRAFT_CORPUS`` or ``../shared/corpus`` beside the project."""
    return Path(os.environ.get("WEIGHTGRAFT_CORPUS", ROOT.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_dir()
    if not path.is_dir():
        pytest.skip(
            f"real-world corpus not found at {path} "
            "(set WEIGHTGRAFT_CORPUS or place shared/corpus beside the project)"
        )
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _fixed_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI output is laid out for ``COLUMNS``; pin it so the suite reads the same tables on
    any terminal and in CI (whose 80 columns once folded a line a test looked for)."""
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture
def umask_027():
    """A umask other than the usual 022, so that a hard-coded 0644 cannot pass either."""
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)
