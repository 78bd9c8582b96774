"""Every ``--checkpoint`` form the docs show works with ``model.generate`` and ``evaluation.run``, and both read the
config saved beside the checkpoint unless ``--config`` is given (``model/checkpoint_paths.py``).

The layout is the one ``training.trainer`` writes (tests/training/test_launcher.py checks the trainer writes it):
``<stage>/checkpoints/step-000004/{config.yaml, export/{five files, config.yaml}}`` and ``checkpoints/latest``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from infra.config import save_config
from model.build import build_modules
from model.checkpoint_paths import resolve_checkpoint
from model.checkpoints import save_vexpress_weights

STEP = "step-000004"
# The forms the docs show (README.md, docs/walkthrough.md, docs/inference.md, docs/evaluation.md,
# docs/real-data.md), mapped onto this test's layout: stage output, step folder, export folder, official folder.
FORMS = {
    "stage": "runs/stage3",
    "step": f"runs/stage3/checkpoints/{STEP}",
    "export": f"runs/stage3/checkpoints/{STEP}/export",
    "five-file": "weights/vexpress",
}
SAVED_FPS = 10.0  # the saved config's own value: seen in the output when the saved config is used


@pytest.fixture()
def layout(tmp_path, monkeypatch, tmp_path_factory):
    """A trained-looking stage folder and an official-style .bin folder with the same (seeded random) weights."""
    from infra.config_tree import load

    os.environ.setdefault("VEXPRESS_CACHE", str(tmp_path_factory.mktemp("vexpress-cache")))
    monkeypatch.chdir(tmp_path)
    stage = tmp_path / "runs" / "stage3"
    cfg = load("tiny/stage3", [f"train.output_dir={stage}", f"inference.fps={SAVED_FPS}", "inference.progress=false",
                               "inference.num_inference_steps=2", "tracking.system_metrics=false"])
    modules = build_modules(cfg.model, seed=123)  # differs from the loader's own seeded init
    step = stage / "checkpoints" / STEP
    save_vexpress_weights(modules, step / "export", config=cfg)
    save_config(cfg, step / "config.yaml")
    (stage / "checkpoints" / "latest").write_text(STEP)
    save_vexpress_weights(modules, tmp_path / "weights" / "vexpress", dtype=torch.float16, file_format="bin")
    return tmp_path, cfg, modules


def test_resolver_forms(layout):
    root, _, _ = layout
    export = root / FORMS["export"]
    for form, rel in FORMS.items():
        found = resolve_checkpoint(root / rel)
        assert found.form == form
        if form == "five-file":
            assert (found.weights, found.config, found.step, found.stage_dir) == (root / rel, None, None, None)
        else:
            assert (found.weights, found.config, found.step, found.stage_dir) == (
                export, export / "config.yaml", 4, root / "runs" / "stage3")
    assert resolve_checkpoint(root / "runs" / "stage3" / "checkpoints").weights == export
    (root / "old").mkdir()  # an official folder laid out with a weights/ subfolder
    (root / "weights" / "vexpress").rename(root / "old" / "weights")
    assert resolve_checkpoint(root / "old").weights == root / "old" / "weights"


def test_resolver_errors_name_the_path(layout):
    root, _, _ = layout
    with pytest.raises(FileNotFoundError, match="nowhere: checkpoint folder not found"):
        resolve_checkpoint(root / "nowhere")
    (root / "runs" / "stage3" / "checkpoints" / "latest").write_text("step-000099")
    with pytest.raises(FileNotFoundError, match="names step-000099, which does not exist"):
        resolve_checkpoint(root / "runs" / "stage3")
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected a stage output folder"):
        resolve_checkpoint(root / "empty")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_load_pipeline_takes_every_form(layout, form):
    from model.pipeline_loading import load_pipeline

    root, cfg, modules = layout
    pipe = load_pipeline(cfg, checkpoint=str(root / FORMS[form]))
    want, got = modules.state_dict(), pipe.modules.state_dict()
    tol = {"atol": 1e-3, "rtol": 1e-3} if form == "five-file" else {"atol": 0, "rtol": 0}  # fp16 files
    for key in want:
        torch.testing.assert_close(got[key].float(), want[key].float(), **tol)


def _fps(path) -> float:
    from preprocessing.media import ffprobe_streams

    video = next(s for s in ffprobe_streams(path) if s["codec_type"] == "video")
    num, den = video["avg_frame_rate"].split("/")
    return float(num) / float(den)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_generate_cli_with_every_form(layout, form, reference_image, speech_like_audio):
    from PIL import Image

    from model.generate import main
    from preprocessing.media import write_wav

    root, _, _ = layout
    Image.fromarray(reference_image).save(root / "ref.png")
    write_wav(root / "speech.wav", speech_like_audio(0.6))
    args = ["--reference", "ref.png", "--audio", "speech.wav", "--checkpoint", FORMS[form]]
    # The official folder has no saved config: the docs pass --config (its preset); ours use the saved one.
    extra = ["--config", "tiny/stage3", "inference.num_inference_steps=2", "inference.progress=false"] \
        if form == "five-file" else []
    assert main([*args, "--output", f"{form}.mp4", *extra]) == 0
    assert _fps(root / f"{form}.mp4") == (25.0 if form == "five-file" else SAVED_FPS)
    if form == "stage":  # --config wins over the saved config
        assert main([*args, "--output", "given.mp4", "--config", "tiny/stage3", "inference.num_inference_steps=2",
                     "inference.progress=false"]) == 0
        assert _fps(root / "given.mp4") == 25.0


@pytest.mark.parametrize("form", sorted(FORMS))
def test_evaluation_cli_with_every_form(layout, form):
    from mlflow.tracking import MlflowClient

    from evaluation.run import main
    from training.synthetic_shards import write_synthetic_shards
    from training.tracking import Tracker

    root, cfg, _ = layout
    shards = write_synthetic_shards(root / "test_shards", clips=1, frames=8, latent_size=None)
    tracker = None
    if form == "stage":  # a tracked training: the evaluation run joins its parent, named after stage and step
        tracker = Tracker(cfg, enabled=True)
        tracker.start(resume=False)
        tracker.end()
    store = f"sqlite:///{root / 'runs' / 'mlflow.db'}"  # the saved config's default store (train.output_dir's root)
    extra = ["--config", "tiny/stage3", f"tracking.tracking_uri={store}", "inference.num_inference_steps=2"] \
        if form == "five-file" else []
    rc = main(["--checkpoint", FORMS[form], "--test-set", f"syn={shards}", *extra, f"eval.output_dir=eval_{form}",
               "eval.metrics=[kpsdis]", "eval.max_videos=1", "eval.sweep_videos=0",
               "eval.face_backend=yunet"])  # the synthetic shards record no real detector
    assert rc == 0 and (root / f"eval_{form}" / "table1.txt").is_file()
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("vexpress")  # the training's experiment, in the training's store
    run = next(r for r in client.search_runs([exp.experiment_id], "tags.`vexpress.kind` = 'evaluation'"))
    assert run.data.params["checkpoint"] == FORMS[form]
    assert set(k.split(".")[0] for k in run.data.params) <= {"eval", "inference", "checkpoint", "config"}
    if form == "five-file":
        assert run.info.run_name == "eval vexpress" and "mlflow.parentRunId" not in run.data.tags
        assert run.data.params["config"] == "tiny/stage3"
    else:
        assert run.info.run_name == "eval stage3 step-000004"
        assert run.data.params["config"].endswith("export/config.yaml")
        assert run.data.params["inference.fps"] == str(SAVED_FPS)
    if tracker is not None:
        assert run.data.tags["mlflow.parentRunId"] == tracker.parent_id
    assert np.isfinite(run.data.metrics["syn/num_videos"])
