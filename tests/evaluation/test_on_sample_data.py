"""Metrics with real detectors (YuNet, SFace) and the whole evaluation on the embedded sample data."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_syncnet_full_path_random_weights(talking_clip, yunet):
    from evaluation import syncnet
    from evaluation.faces import detect_per_frame

    frames, audio = talking_clip
    frames, audio = frames[:30], audio[: 30 * 640]
    boxes, missing = syncnet.interpolate_missing_boxes([f.box if f else None for f in detect_per_frame(yunet, frames)])
    crops = syncnet.syncnet_face_crops(frames, boxes)
    s = syncnet.sync_scores(syncnet.SyncNet(), crops, audio)
    assert s.num_windows == 25 and missing == 0
    assert np.isfinite([s.lse_d, s.lse_c]).all() and s.lse_c >= 0 and -15 <= s.offset <= 15


def test_kpsdis_with_real_detector(talking_clip, yunet):
    from evaluation.faces import detect_per_frame
    from evaluation.kpsdis import kps_distance

    frames = talking_clip[0][:6]
    target = np.stack([f.kps for f in detect_per_frame(yunet, frames)])
    same = kps_distance([f.kps for f in detect_per_frame(yunet, frames)], target, (512, 512))
    assert same.value < 1e-3
    shift = np.float32([[1, 0, 12], [0, 1, 0]])
    moved = np.stack([cv2.warpAffine(f, shift, (512, 512), borderMode=cv2.BORDER_REFLECT) for f in frames])
    half = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in moved])
    res = kps_distance([f.kps if f else None for f in detect_per_frame(yunet, half)], target, (256, 256))
    assert res.num_no_face == 0 and 8.0 < res.value < 16.0  # ~12 px at 512² whatever the frame size


def test_facesim_with_sface(talking_clip, sample_data_dir, yunet):
    from evaluation.faces import detect_per_frame
    from evaluation.facesim import face_similarity
    from preprocessing import media
    from preprocessing.face_id import SFaceEmbedder

    emb = SFaceEmbedder()
    gt = talking_clip[0][:8]
    gt_faces = detect_per_frame(yunet, gt)
    same = face_similarity(emb, gt[0], gt_faces[0], gt, gt_faces, gt, gt_faces, exclude=[0])
    assert same.delta == 0.0 and 0.3 < same.facesim_ground_truth <= 1.0
    other = media.read_frames(sample_data_dir / "good_astronaut_a0007.mp4", fps=25, max_frames=8)
    other = np.stack([cv2.resize(f, (512, 512)) for f in other])
    swapped = face_similarity(emb, gt[0], gt_faces[0], other, detect_per_frame(yunet, other), gt, gt_faces,
                              exclude=[0])
    assert swapped.facesim_generated < same.facesim_ground_truth - 0.2  # another person looks less alike
    assert swapped.delta > 0.2


def _cfg(tmp_path, test_sets, extra=()):
    from infra.config_tree import load

    return load("tiny/stage3", [
        f"eval.test_set=shards_set={test_sets['shards']},folder_set={test_sets['folder']}",
        f"eval.output_dir={tmp_path / 'eval'}", "eval.max_frames=20", "eval.fid_dims=64",
        "eval.allow_rank_deficient=true", "eval.fvd_clip_frames=8", "eval.audio_weight_sweep=[0.0,3.0]", "inference.num_inference_steps=1",
        "inference.audio_attention_weight=3.0", *extra])


def test_ground_truth_replay_scores_perfectly(tmp_path, eval_test_sets, yunet):
    """A generator that returns the ground truth: every metric must say 'identical'."""
    from evaluation.run import run_evaluation

    cfg = _cfg(tmp_path, eval_test_sets, ["eval.sweep_videos=0"])
    run = run_evaluation(cfg, lambda video, w: video.frames.copy(), face_backend=yunet, i3d_random_width=0.125)
    for ds in ("shards_set", "folder_set"):
        r = run.results[ds]
        assert r["num_videos"] == 1
        assert r["fid"] < 1e-6 and r["fvd"] < 1e-6 and r["fid_rank_deficient"] == 1.0
        assert r["delta_facesim"] == 0.0 and r["facesim_generated"] > 30
        assert r["kpsdis_no_face_frames"] == 0
        # folder: the target V-Kps were detected on these very frames; shards: on the frames before h264
        assert r["kpsdis"] < (3.0 if ds == "shards_set" else 1e-3)
        assert r["lse_c"] == pytest.approx(r["lse_c_gt"]) and r["lse_d"] == pytest.approx(r["lse_d_gt"])
    assert set(run.random_weights) == {"inception", "i3d", "syncnet"}


def test_end_to_end_tiny_pipeline_mlflow(tmp_path, eval_test_sets, yunet):
    import mlflow

    from evaluation.run import pipeline_generate_fn, run_evaluation
    from model.build import build_modules
    from model.checkpoints import save_vexpress_weights

    cfg = _cfg(tmp_path, eval_test_sets, ["eval.max_videos=1"])
    ckpt = tmp_path / "tiny_ckpt"
    save_vexpress_weights(build_modules(cfg.model), ckpt, config=cfg.model)
    run = run_evaluation(cfg, pipeline_generate_fn(cfg, str(ckpt)), checkpoint=str(ckpt), config_name="tiny/stage3",
                         face_backend=yunet, i3d_random_width=0.125)
    assert "Ground-Truth" in run.table and "shards_set" in run.table and "folder_set" in run.table
    out = run.output_dir
    for name in ("per_video.csv", "table1.txt", "metrics.json", "distributions.png", "audio_weight_sweep.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "per_video.csv")))
    assert len(rows) == 2 and {r["dataset"] for r in rows} == {"shards_set", "folder_set"}
    client = mlflow.MlflowClient(f"sqlite:///{out.resolve()}/mlflow.db")
    got = client.get_run(run.run_id)
    assert got.data.tags["random_weights"] == "true"
    assert got.data.tags["random_weight_networks"] == "inception,i3d,syncnet"
    for ds in ("shards_set", "folder_set"):
        for m in ("fid", "fvd", "delta_facesim", "kpsdis", "lse_c", "lse_d", "av_offset"):
            assert f"{ds}/{m}" in got.data.metrics, m
        assert np.isfinite(got.data.metrics[f"{ds}/fid"]) and np.isfinite(got.data.metrics[f"{ds}/lse_c"])
    assert got.data.params["eval.fid_dims"] == "64" and got.data.params["checkpoint"] == str(ckpt)
    arts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"per_video.csv", "distributions.png", "audio_weight_sweep.png", "table1.txt"} <= arts
