"""training.fit_vae: the CPU preset's VAE fit is resumable, tracked and loadable by the stages."""

import json

import pytest
import torch

from infra.config_tree import load
from model.build import build_vae
from tests.synthetic_shards import write_synthetic_shards
from training.fit_vae import VaeFitter


def _cfg(tmp_path, out, **vae):
    shards = write_synthetic_shards(tmp_path / "shards", clips=2, frames=6, size=64, latent_size=None)
    return load("tiny/stage1", [f"data.shards={shards}", f"vae.output_dir={out}", "vae.batch_size=2",
                                "vae.checkpoint_every=2", "vae.max_steps=4", "vae.threads=1",
                                f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                *[f"vae.{k}={v}" for k, v in vae.items()]])


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = VaeFitter(_cfg(tmp_path, tmp_path / "whole"))
    whole.run()
    cfg = _cfg(tmp_path, tmp_path / "resumed")
    calls = {"n": 0}
    real_step = VaeFitter.train_step

    def crash_after_checkpoint(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint
        return real_step(self, *args)

    monkeypatch.setattr(VaeFitter, "train_step", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        VaeFitter(cfg).run()
    assert (tmp_path / "resumed" / "checkpoint.pt").is_file()
    monkeypatch.setattr(VaeFitter, "train_step", real_step)
    metrics = VaeFitter(cfg).run()
    a = build_vae(load("tiny/stage1", [f"model.pretrained.vae={tmp_path / 'whole' / 'vae'}"]).model)
    b = build_vae(load("tiny/stage1", [f"model.pretrained.vae={tmp_path / 'resumed' / 'vae'}"]).model)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    assert a.config.scaling_factor == b.config.scaling_factor == metrics["scaling_factor"] > 0
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["steps"] == 4
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert (tmp_path / "resumed" / "reconstructions.png").is_file()
    # A finished fit is not redone.
    assert VaeFitter(cfg).run() == metrics


def test_fit_is_logged_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = _cfg(tmp_path, tmp_path / "vae_out", max_steps=2)
    VaeFitter(cfg).run()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
                             filter_string="attributes.run_name = 'vae'")[0]
    assert {"psnr_db", "scaling_factor"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"validation", "vae"}
