"""Synthetic shards in the documented format (docs/shard-format.md), written with preprocessing.shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic_shards import write_synthetic_shards


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), no_audio=(4,))


@pytest.fixture(scope="session")
def synthetic_frame_shards(tmp_path_factory) -> Path:
    return write_synthetic_shards(tmp_path_factory.mktemp("frame_shards"), latent_size=None, clips=4)
