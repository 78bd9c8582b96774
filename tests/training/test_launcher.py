"""End to end: the `deepspeed` launcher with 2 CPU ranks trains stage I -> II -> III on shards built from the
embedded sample data (a real talking-face video with speech), leaving checkpoints and one MLflow experiment; an
evaluation of the stage III folder joins it, and an `mlflow server` on that store shows the whole story over REST."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infra.net import free_port

REPO = Path(__file__).resolve().parents[2]
VIDEO = "good_carphone_a0009.mp4"  # 80 frames, 512², real speech


def _build_sample_shards(sample_data_dir: Path, out: Path, clip_frames: int = 20) -> Path:
    """Cut the sample video into clips and write them with preprocessing's own functions (YuNet keypoints,
    mouth and lip boxes, a tiny random wav2vec2 for the audio features); the last clip is stored without audio."""
    from preprocessing import lips, media, shards
    from preprocessing.audio import AudioEncoder, save_tiny_wav2vec2
    from preprocessing.clips import mouth_boxes
    from preprocessing.faces import make_face_backend

    frames = media.read_frames(sample_data_dir / VIDEO, fps=25)
    audio = media.read_audio(sample_data_dir / VIDEO, 16000)
    faces = make_face_backend("yunet")
    encoder = AudioEncoder(save_tiny_wav2vec2(out / "wav2vec2", hidden_size=32))
    samples, index = [], []
    clips = len(frames) // clip_frames
    for c in range(clips):
        clip = frames[c * clip_frames:(c + 1) * clip_frames]
        kps = np.stack([max(faces.detect(f), key=lambda face: face.score).kps for f in clip]).astype(np.float32)
        has_audio = c < clips - 1
        clip_audio = audio[c * clip_frames * 640:(c + 1) * clip_frames * 640]
        meta = {"source": VIDEO, "video_id": "carphone", "clip_index": c, "start_s": c * clip_frames / 25,
                "end_s": (c + 1) * clip_frames / 25, "fps": 25.0, "num_frames": clip_frames,
                "crop_box": [0, 0, 512, 512], "crop_size": 512, "has_audio": has_audio, "face_backend": "yunet",
                "audio_encoder": "tiny-wav2vec2", "audio_dim": 32, "has_latents": False, "lips": "kps5"}
        key = shards.sample_key("carphone", c)
        samples.append(shards.encode_sample(
            key, meta, media.encode_mp4_bytes(clip, 25.0), kps, mouth_boxes(kps, 512),
            wav=media.wav_bytes(clip_audio, 16000) if has_audio else None,
            audio_features=encoder.features_for_clip(clip_audio, clip_frames) if has_audio else None,
            lips=lips.lip_boxes_from_corners(kps, lips.mouth_cavities(clip, kps))))
        index.append({"key": key, "shard": "", "num_frames": clip_frames, "has_audio": has_audio})
    names = []
    for s in range(2):
        names.append({"name": f"shard-{s:06d}.tar", "num_samples": len(samples[s::2])})
        for entry in index[s::2]:
            entry["shard"] = names[-1]["name"]
        shards.write_tar(out / "shards" / names[-1]["name"], samples[s::2])
    shards.write_json_atomic(out / "index.json", shards.build_index({}, names, index, {}))
    return out


def _launch(stage: int, shards: Path, root: Path, *extra: str) -> None:
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    port = free_port()
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(port), str(REPO / "training" / "run.py"),
           "--config", f"tiny/stage{stage}", f"data.shards={shards}", f"train.output_dir={root / f'stage{stage}'}",
           "train.max_steps=2", "train.checkpoint_every=1", "train.keep_last=2", "train.validate_every=2",
           "train.validation_frames=4", "inference.num_inference_steps=2", "data.num_workers=1",
           "tracking.system_metrics_interval_s=1", *extra]
    if stage > 1:
        cmd += [f"train.init_from={root / f'stage{stage - 1}'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    # DeepSpeed's CPU shared-memory all-reduce buffers are released (training.engine.release_shm_allreduce_buffer)
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


@pytest.fixture(scope="module")
def trained(sample_data_dir, tmp_path_factory):
    """Shards and the three trained stages (2 ranks each), shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("launcher")
    shards = _build_sample_shards(sample_data_dir, tmp_path / "shards")
    root = tmp_path / "runs"
    for stage in (1, 2, 3):
        extra = {1: [], 2: ["data.num_frames=4", "train.grad_accum=2"],
                 3: ["data.num_frames=4", "train.gradient_checkpointing=true", "train.zero_stage=2"]}[stage]
        _launch(stage, shards, root, *extra)
    return shards, root


@pytest.mark.slow
def test_deepspeed_two_ranks_train_three_stages(trained):
    from mlflow.tracking import MlflowClient

    shards, root = trained

    for stage in (1, 2, 3):
        ckpts = root / f"stage{stage}" / "checkpoints"
        assert (ckpts / "latest").read_text() == "step-000002"
        assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000001", "step-000002"]
        step = ckpts / "step-000002"
        assert {p.name for p in (step / "train_state").iterdir()} == {"rank-00000.pt", "rank-00001.pt"}
        assert (step / "config.yaml").is_file() and any(step.glob("*optim_states.pt"))
        assert {p.stem for p in (step / "export").glob("*.safetensors")} == {
            "denoising_unet", "reference_net", "motion_module", "v_kps_guider", "audio_projection"}

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vexpress")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: r.info.run_name)
    assert len(parents) == 1 and [r.info.run_name for r in children] == ["stage1", "stage2", "stage3"]
    for stage, run in enumerate(children, start=1):
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id and run.info.status == "FINISHED"
        assert run.data.params["train.stage"] == str(stage)
        assert {k.split(".")[0] for k in run.data.params} == {"train", "data", "model", "count"}  # own sections
        assert "system/cpu_utilization_percentage" in run.data.metrics  # tracking.system_metrics
        assert {"loss", "loss_mouth", "lr", "grad_norm", "samples_per_s", "step_time_s", "memory_gb"} <= set(
            run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 2
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config", "weights", "validation", "config.yaml"} <= artifacts
        videos = [a.path for a in client.list_artifacts(run.info.run_id, "validation")]
        assert videos == ["validation/step-000002.mp4", "validation/step-000002.png"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.mark.slow
def test_mlflow_server_shows_one_story(trained, tmp_path):
    """Training and evaluation in one store and experiment, as a user browses it: a lean `mlflow server` on the
    store, checked over REST."""
    from evaluation.run import main as evaluate
    from tests.mlflow_server import mlflow_server

    shards, root = trained
    # No tracking settings: evaluation finds the training's store, experiment and parent through the checkpoint.
    assert evaluate(["--checkpoint", str(root / "stage3"), "--test-set", f"holdout={shards}",
                     f"eval.output_dir={tmp_path / 'eval'}", "eval.metrics=[kpsdis]", "eval.max_videos=1",
                     "eval.max_frames=8", "eval.sweep_videos=0"]) == 0
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts") as rest:
        experiments = [e for e in rest.post("experiments/search", {"max_results": 100})["experiments"]
                       if e["name"] != "Default"]
        assert [e["name"] for e in experiments] == ["vexpress"]  # one experiment
        exp = experiments[0]
        assert "stage runs" in {t["key"]: t["value"] for t in exp["tags"]}["mlflow.note.content"]  # described
        runs = rest.post("runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        assert set(by_name) == {"runs", "stage1", "stage2", "stage3", "eval stage3 step-000002"}
        parent = by_name["runs"]["info"]["run_id"]
        for name, run in by_name.items():
            tags = _tags(run)
            assert tags.get("mlflow.parentRunId") == (None if name == "runs" else parent), name
            if commit.strip():
                assert tags["mlflow.source.git.commit"] == commit.strip(), name
        for stage in (1, 2, 3):
            run = by_name[f"stage{stage}"]
            params = {p["key"] for p in run["data"]["params"]}
            assert "train.lr" in params and {k.split(".")[0] for k in params} == {"train", "data", "model", "count"}
        evaluation = by_name["eval stage3 step-000002"]
        assert _tags(evaluation)["vexpress.checkpoint_step"] == "2"
        assert {m["key"] for m in evaluation["data"]["metrics"]} >= {"holdout/num_videos", "holdout/kpsdis"}
        stage3 = by_name["stage3"]["info"]["run_id"]
        listed = rest.get("artifacts/list", run_id=stage3, path="validation")["files"]
        assert [f["path"] for f in listed] == ["validation/step-000002.mp4", "validation/step-000002.png"]
        video = rest.raw(f"get-artifact?path=validation/step-000002.mp4&run_uuid={stage3}")  # what the UI plays
        assert video[4:8] == b"ftyp" and len(video) == listed[0]["file_size"]
        assert b"<html" in rest.raw("/").lower()  # the UI the printed runs-table URL opens
