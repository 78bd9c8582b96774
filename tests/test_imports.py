"""The project and its core stack import in the venv; model code stays free of the distributed engines."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PROJECT = ["preprocessing", "training", "model", "evaluation", "infra"]
STACK = ["deepspeed", "ray", "webdataset", "mlflow", "insightface", "torchaudio", "diffusers", "transformers",
         "einops"]


@pytest.mark.parametrize("name", PROJECT + STACK)
def test_imports(name):
    assert importlib.import_module(name) is not None


def test_model_code_never_imports_deepspeed_or_ray():
    code = ("import sys, model.build, model.pipeline, model.checkpoints, model.stages, model.generate;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('deepspeed', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
