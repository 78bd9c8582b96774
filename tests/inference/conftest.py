"""Fixtures for the inference tests: one tiny pipeline per session, single-threaded torch."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch


@contextlib.contextmanager
def one_torch_thread():
    # Tiny ops on a shared 2-core machine: one thread avoids oversubscription (20x slower when contended).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_cfg():
    from infra.config_tree import load

    return load("tiny/stage3", ["inference.progress=false"])


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_cfg, tmp_path_factory):
    import os

    os.environ.setdefault("VEXPRESS_CACHE", str(tmp_path_factory.mktemp("vexpress-cache")))
    from model.pipeline_loading import load_pipeline

    with one_torch_thread():
        return load_pipeline(tiny_cfg)


@pytest.fixture(scope="session")
def reference_image():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # a real face, 512 x 512 RGB


@pytest.fixture()
def speech_like_audio():
    """``seconds`` of a 16 kHz amplitude-modulated tone (syllable-like envelope)."""

    def make(seconds: float) -> np.ndarray:
        t = np.arange(int(round(seconds * 16000))) / 16000
        return (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)

    return make
