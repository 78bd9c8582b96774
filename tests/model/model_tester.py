"""A shared test suite for the V-Express modules, in the style of diffusers' ``ModelTesterMixin``.

A test class for one module only says how to build a tiny instance and how to make its inputs::

    class TestVKpsGuider(ModelTesterMixin):
        def build_model(self, device="cpu"):
            with torch.device(device):
                return VKpsGuider(...)

        def make_inputs(self, seed=0):
            g = torch.Generator().manual_seed(seed)
            return {"kps_images": torch.rand(2, 3, 4, 64, 64, generator=g)}

        expected_output_shape = (2, 32, 4, 8, 8)   # optional: checked against the first output tensor

Every ``test_*`` method below then runs for that module. Optional hooks:

- ``forward(model, inputs)``: how to call the model (default ``model(**inputs)``);
- ``expected_output_shape``: shape of the first output tensor (``None`` = not checked);
- ``params_without_grad``: name prefixes of parameters that legitimately get no gradient
  (e.g. layers after the last tapped feature);
- ``meta_build``: set False when the module cannot be built on the meta device.

Model outputs may be a tensor, a diffusers-style output with ``.sample``, a dataclass, or a list/tuple/dict of
those: :func:`output_tensors` flattens them.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch
from torch import nn


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Flatten a model output (tensor, dataclass, list/tuple/dict, ``.sample`` holder) into its tensors."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for value in output.values() for t in output_tensors(value)]
    if isinstance(output, (list, tuple)):
        return [t for value in output for t in output_tensors(value)]
    if dataclasses.is_dataclass(output):
        return [t for f in dataclasses.fields(output) for t in output_tensors(getattr(output, f.name))]
    if hasattr(output, "sample"):
        return output_tensors(output.sample)
    return []


def _clone_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


class ModelTesterMixin:
    """Shared checks; subclasses implement ``build_model`` and ``make_inputs``."""

    expected_output_shape: tuple[int, ...] | None = None
    params_without_grad: tuple[str, ...] = ()
    meta_build: bool = True
    atol: float = 1e-6

    # ----- hooks supplied by the test class -----
    def build_model(self, device: str = "cpu") -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_inputs(self, seed: int = 0) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        return model(**inputs)

    # ----- helpers -----
    def _run(self, model: nn.Module, inputs: dict[str, Any], grad: bool = False) -> list[torch.Tensor]:
        with torch.set_grad_enabled(grad):
            tensors = output_tensors(self.forward(model, _clone_inputs(inputs)))
        assert tensors, f"{type(model).__name__} returned no tensors"
        return tensors

    def _assert_same(self, a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
        assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} output tensors"
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape, f"{what}: output {i} shape {tuple(x.shape)} vs {tuple(y.shape)}"
            torch.testing.assert_close(x, y, atol=self.atol, rtol=0, msg=lambda m, i=i: f"{what}: output {i}: {m}")

    # ----- the shared tests -----
    def test_forward_shape_and_finite(self) -> None:
        model = self.build_model().eval()
        tensors = self._run(model, self.make_inputs())
        if self.expected_output_shape is not None:
            assert tuple(tensors[0].shape) == tuple(self.expected_output_shape)
        for i, t in enumerate(tensors):
            assert torch.isfinite(t).all(), f"output {i} has non-finite values"

    def test_deterministic_in_eval(self) -> None:
        model = self.build_model().eval()
        inputs = self.make_inputs()
        self._assert_same(self._run(model, inputs), self._run(model, inputs), "two eval forwards")

    def test_different_inputs_change_output(self) -> None:
        model = self.build_model().eval()
        a = self._run(model, self.make_inputs(seed=0))
        b = self._run(model, self.make_inputs(seed=1))
        assert any(not torch.equal(x, y) for x, y in zip(a, b)), "output ignores its inputs"

    def test_state_dict_round_trip(self) -> None:
        torch.manual_seed(0)
        model = self.build_model().eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        torch.manual_seed(1234)  # a different random init, overwritten by the load
        restored = self.build_model().eval()
        restored.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        inputs = self.make_inputs()
        self._assert_same(self._run(model, inputs), self._run(restored, inputs), "after state_dict round trip")

    def test_backward_gives_gradients(self) -> None:
        model = self.build_model().train()
        tensors = self._run(model, self.make_inputs(), grad=True)
        loss = sum((t.float() ** 2).mean() for t in tensors if t.requires_grad)
        assert isinstance(loss, torch.Tensor), "no output depends on a trainable parameter"
        loss.backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and p.grad is None and not name.startswith(self.params_without_grad)
        ]
        assert not missing, f"parameters without gradient: {missing[:10]} (+{max(0, len(missing) - 10)})"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), "all gradients zero"

    def test_meta_build_matches_cpu(self) -> None:
        if not self.meta_build:
            return
        cpu = {k: tuple(v.shape) for k, v in self.build_model().state_dict().items()}
        meta_model = self.build_model(device="meta")
        meta = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
        assert list(meta) == list(cpu), "meta-built module has different keys or key order"
        assert meta == cpu, "meta-built module has different shapes"
        assert all(p.device.type == "meta" for p in meta_model.parameters()), "meta build allocated real tensors"


# ----- helpers shared by the model tests -----
import pytest  # noqa: E402


@pytest.fixture
def one_thread():
    """Tiny models on a loaded 2-core machine run faster (and steadier) on one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
