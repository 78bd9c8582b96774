"""Our sd15 modules, built on the meta device, have exactly the official checkpoints' keys, order and shapes."""

from __future__ import annotations

import pytest
import torch

from infra.config_tree import load
from model.build import build_modules
from model.official_manifest import official_manifest


@pytest.fixture(scope="module")
def manifest() -> dict:
    return official_manifest()  # shipped in model/data/: a missing file fails, never skips


@pytest.fixture(scope="module")
def sd15_modules():
    return build_modules(load("sd15/stage1").model, device="meta")


def _listing(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in state_dict.items()]


def _assert_matches(ours: list[tuple[str, list[int]]], official: list[list], what: str) -> None:
    official_keys = [k for k, _ in official]
    ours_keys = [k for k, _ in ours]
    missing = [k for k in official_keys if k not in set(ours_keys)]
    unexpected = [k for k in ours_keys if k not in set(official_keys)]
    assert not missing and not unexpected, f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]}"
    mismatched = [(k, s, dict(ours)[k]) for k, s in official if dict(ours)[k] != s]
    assert not mismatched, f"{what}: mis-shaped {mismatched[:5]}"
    assert ours_keys == official_keys, f"{what}: same keys, different order"


@pytest.mark.parametrize(("file", "module", "key_filter"), [
    ("denoising_unet.bin", "denoising_unet", None),
    ("motion_module.bin", "denoising_unet", "motion_modules"),
    ("reference_net.bin", "reference_net", None),
])
def test_keys_order_shapes_and_counts_equal_manifest(manifest, sd15_modules, file, module, key_filter):
    entry = manifest["files"][file]
    state = getattr(sd15_modules, module).state_dict()
    if key_filter:
        state = {k: v for k, v in state.items() if key_filter in k}
    _assert_matches(_listing(state), entry["tensors"], file)
    assert len(state) == entry["num_tensors"]
    assert sum(v.numel() for v in state.values()) == entry["num_params"]


def test_official_param_counts(sd15_modules):
    counts = {name: sum(v.numel() for v in getattr(sd15_modules, name).state_dict().values())
              for name in ("denoising_unet", "reference_net")}
    motion = sum(v.numel() for k, v in sd15_modules.denoising_unet.state_dict().items() if "motion_modules" in k)
    assert counts == {"denoising_unet": 1_363_537_604, "reference_net": 859_520_324}
    assert motion == 454_417_600


def test_variant_without_motion_modules(manifest, sd15_modules):
    variant = manifest["variants"]["denoising_unet.bin_without_motion_modules"]
    state = {k: v for k, v in sd15_modules.denoising_unet.state_dict().items() if "motion_module" not in k}
    assert len(state) == variant["num_tensors"]
    assert sum(v.numel() for v in state.values()) == variant["num_params"]


def test_pe_buffers_are_persistent_and_sinusoidal():
    from model.motion_module import SinusoidalPositionalEncoding

    pe = SinusoidalPositionalEncoding(8, max_len=32)
    assert list(pe.state_dict()) == ["pe"] and pe.pe.shape == (1, 32, 8)
    pos, i = 5, 1  # channel pair i: even = sin, odd = cos of pos * 10000^(-2i/C)
    angle = pos * 10000 ** (-2 * i / 8)
    torch.testing.assert_close(pe.pe[0, pos, 2 * i], torch.tensor(angle).sin())
    torch.testing.assert_close(pe.pe[0, pos, 2 * i + 1], torch.tensor(angle).cos())
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, 33, 8))
