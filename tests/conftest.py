"""Shared fixtures: tiny configs, offline environment, sample data built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


@pytest.fixture(scope="session")
def tiny_config():
    from infra.config_tree import load

    return load("tiny/stage1")


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory):
    """The embedded sample set (preprocessing.sample_data), built once per test session; see its manifest.json."""
    from preprocessing.sample_data import build_sample_data

    out = tmp_path_factory.mktemp("sample_data")
    build_sample_data(out, log=lambda _msg: None)
    return out
