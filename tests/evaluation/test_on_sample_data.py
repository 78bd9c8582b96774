"""Metrics with real detectors (YuNet, SFace) and the whole evaluation on the embedded sample data."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_syncnet_full_path_random_weights(talking_clip, yunet):
    from evaluation import syncnet
    from perception.faces import detect_per_frame

    frames, audio = talking_clip
    frames, audio = frames[:30], audio[: 30 * 640]
    boxes, missing = syncnet.interpolate_missing_boxes([f.box if f else None for f in detect_per_frame(yunet, frames)])
    crops = syncnet.syncnet_face_crops(frames, boxes)
    s = syncnet.sync_scores(syncnet.SyncNet(), crops, audio)
    assert s.num_windows == 25 and missing == 0
    assert np.isfinite([s.lse_d, s.lse_c]).all() and s.lse_c >= 0 and -15 <= s.offset <= 15


def test_kpsdis_with_real_detector(talking_clip, yunet):
    from evaluation.kpsdis import kps_distance
    from perception.faces import detect_per_frame

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
    from evaluation.facesim import face_similarity
    from perception import media
    from perception.face_id import SFaceEmbedder
    from perception.faces import detect_per_frame

    emb = SFaceEmbedder()
    gt = talking_clip[0][:8]
    gt_faces = detect_per_frame(yunet, gt)
    same = face_similarity(emb, gt[0], gt_faces[0], gt, gt_faces, gt, gt_faces, exclude=[0])
    assert same.delta == 0.0 and 0.3 < same.facesim_ground_truth <= 1.0 and same.num_paired_frames == 7
    other = media.read_frames(sample_data_dir / "good_astronaut_a0007.mp4", fps=25, max_frames=8)
    other = np.stack([cv2.resize(f, (512, 512)) for f in other])
    swapped = face_similarity(emb, gt[0], gt_faces[0], other, detect_per_frame(yunet, other), gt, gt_faces,
                              exclude=[0])
    assert swapped.facesim_generated < same.facesim_ground_truth - 0.2  # another person looks less alike
    assert swapped.delta < -0.2  # signed: identity lost -> negative


def _cfg(tmp_path, test_sets, extra=()):
    from infra.config_tree import load

    return load("tiny/stage3", [
        f"eval.test_set=shards_set={test_sets['shards']},folder_set={test_sets['folder']}",
        f"eval.output_dir={tmp_path / 'eval'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'eval'}/mlflow.db",
        "eval.max_frames=20", "eval.fid_dims=64",
        "eval.fvd_clip_frames=8", "eval.audio_weight_sweep=[0.0,3.0]", "inference.num_inference_steps=1",
        "inference.audio_attention_weight=3.0", *extra])


def test_ground_truth_replay_scores_perfectly(tmp_path, eval_test_sets, yunet):
    """A generator that returns the ground truth: every metric must say 'identical' (all-clips protocol:
    SyncNet on the whole 20-frame clip)."""
    from evaluation.run import run_evaluation

    cfg = _cfg(tmp_path, eval_test_sets, ["eval.sweep_videos=0", "eval.protocol=all-clips"])
    run = run_evaluation(cfg, lambda video, w: video.frames.copy(), face_backend=yunet, i3d_random_width=0.125)
    for ds in ("shards_set", "folder_set"):
        r = run.results[ds]
        assert r["num_videos"] == 1
        assert r["fid"] < 1e-6 and r["fvd"] < 1e-6 and r["fid_rank_deficient"] is True
        assert r["fid_samples_generated"] == r["fid_samples_real"] == 20 and r["fvd_samples_real"] == 2
        assert r["delta_facesim"] == 0.0 and r["facesim_generated"] > 30
        assert r["kpsdis_no_face_frames"] == 0 and r["face_backend"] == "yunet"
        # folder: the target V-Kps were detected on these very frames; shards: on the frames before h264
        assert r["kpsdis"] < (3.0 if ds == "shards_set" else 1e-3)
        assert r["sync_c"] == pytest.approx(r["sync_c_gt"]) and r["sync_d"] == pytest.approx(r["sync_d_gt"])
        assert np.isnan(r["fid_floor"]) and "0 samples" in r["fid_floor_error"]  # one source video: no floor
    assert set(run.random_weights) == {"inception", "i3d", "syncnet"}


def test_end_to_end_tiny_pipeline_mlflow(tmp_path, eval_test_sets, yunet):
    import mlflow

    from evaluation.run import pipeline_generate_fn, run_evaluation
    from model.build import build_modules
    from model.checkpoints import save_vexpress_weights

    cfg = _cfg(tmp_path, eval_test_sets, ["eval.max_videos=1", "eval.protocol=all-clips"])
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
    assert got.data.tags["random_weights"] == "true" and got.data.tags["protocol"] == "all-clips"
    assert got.data.tags["random_weight_networks"] == "inception,i3d,syncnet"
    for ds in ("shards_set", "folder_set"):
        for m in ("fid", "fvd", "delta_facesim", "kpsdis", "sync_c", "sync_d", "av_offset", "fid_rank_deficient"):
            assert f"{ds}/{m}" in got.data.metrics, m
        assert np.isfinite(got.data.metrics[f"{ds}/fid"]) and np.isfinite(got.data.metrics[f"{ds}/sync_c_gt"])
    assert got.data.params["eval.fid_dims"] == "64" and got.data.params["checkpoint"] == str(ckpt)
    arts = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"per_video.csv", "distributions.png", "audio_weight_sweep.png", "table1.txt", "metrics.json"} <= arts


def test_cli_stylegan_v_protocol_writes_floor_and_sync_columns(tmp_path, two_source_shards, capsys):
    """``python -m evaluation.run ... eval.protocol=stylegan-v`` with a tiny random checkpoint."""
    import json

    from evaluation.run import main
    from infra.config_tree import load
    from model.build import build_modules
    from model.checkpoints import save_vexpress_weights

    cfg = load("tiny/stage3")
    ckpt = tmp_path / "tiny_ckpt"
    save_vexpress_weights(build_modules(cfg.model), ckpt, config=cfg.model)
    rc = main(["--config", "tiny/stage3", "--checkpoint", str(ckpt), "--test-set", f"sample={two_source_shards}",
               "eval.protocol=stylegan-v", f"eval.output_dir={tmp_path / 'eval'}", "eval.max_frames=20",
               f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
               "eval.fid_dims=64", "eval.sweep_videos=0", "eval.sync_min_track=10", "inference.num_inference_steps=1"])
    assert rc == 0, capsys.readouterr().err
    table = (tmp_path / "eval" / "table1.txt").read_text()
    lines = table.splitlines()
    assert lines[0].startswith("WARNING: RANDOM-WEIGHT feature networks (inception, i3d, syncnet)")
    assert lines[1].startswith("protocol stylegan-v (modified: sync_min_track=10): FVD = StyleGAN-V fvd2048_16f")
    assert "Faces (sample): detector yunet (test set recorded yunet), identity sface" in table
    header = next(line for line in lines if "Sync-C" in line)
    assert header.split("|")[1].split() == ["FID", "FVD", "ΔFaceSim", "KpsDis", "Sync-C", "Sync-D"]
    floor = next(line for line in lines if line.startswith("Real vs real (floor)")).split("|")[1].split()
    assert floor[2:] == ["-", "-", "-", "-"] and all(np.isfinite(float(x)) for x in floor[:2])
    gt = next(line for line in lines if line.startswith("Ground-Truth")).split("|")[1].split()
    assert all(np.isfinite(float(x)) for x in gt[-2:])  # Sync-C / Sync-D of the real videos
    r = json.loads((tmp_path / "eval" / "metrics.json").read_text(),
                   parse_constant=lambda t: pytest.fail(f"non-strict JSON token {t}"))["sample"]
    assert r["protocol"] == "stylegan-v" and r["fvd_samples_real"] == 2 and r["fvd_floor_samples_half1"] == 1
    assert r["floor_sources_half1"] == r["floor_sources_half2"] == 1 and r["fid_floor_samples_half2"] == 20
    assert "RANDOM-WEIGHT" in capsys.readouterr().out
