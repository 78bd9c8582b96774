"""One detector end to end: evaluation detects with the backend the test set was preprocessed with."""

from __future__ import annotations

import json

import pytest

from evaluation.config import EvalConfig
from evaluation.faces import face_setup, resolve_face_backend
from evaluation.testset import recorded_face_backend


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory):
    from preprocessing.tiny_face_models import make_tiny_insightface_pack

    root = tmp_path_factory.mktemp("insightface")
    make_tiny_insightface_pack(root, "tiny")
    return str(root)


def test_auto_follows_the_recorded_backend(tiny_pack, tmp_path):
    cfg = EvalConfig()
    assert resolve_face_backend(cfg, "yunet") == ("yunet", "")
    assert resolve_face_backend(cfg, None) == ("yunet", "")  # a raw folder: the offline default
    assert resolve_face_backend(cfg, "insightface:tiny", tiny_pack) == ("insightface:tiny", tiny_pack)
    with pytest.raises(FileNotFoundError, match="preprocessed with insightface:buffalo_l .* eval.insightface_root"):
        resolve_face_backend(cfg, "insightface:buffalo_l", str(tmp_path))


def test_forced_insightface_and_the_missing_pack_fallback(tiny_pack, tmp_path):
    cfg = EvalConfig(face_backend="insightface", insightface_root=tiny_pack, insightface_pack="tiny")
    assert resolve_face_backend(cfg, "yunet") == ("insightface:tiny", tiny_pack)  # forced: a mismatch, noted later
    missing = EvalConfig(face_backend="insightface", insightface_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="eval.insightface_missing=auto"):
        resolve_face_backend(missing, "yunet")
    sd15_like = EvalConfig(face_backend="insightface", insightface_root=str(tmp_path), insightface_missing="auto")
    assert resolve_face_backend(sd15_like, "yunet") == ("yunet", "")


def test_embedder_follows_the_detector(tiny_pack):
    cfg = EvalConfig(insightface_root=tiny_pack)
    ins = face_setup(cfg, "insightface:tiny", tiny_pack)
    assert ins.backend_name == "insightface:tiny" and ins.backend.name == "insightface"
    assert ins.embedder_name == "arcface" and not ins.mismatch
    yun = face_setup(cfg, "yunet")
    assert yun.embedder_name == "sface"
    forced = face_setup(EvalConfig(face_backend="yunet"), "insightface:tiny", tiny_pack)
    assert forced.mismatch and forced.backend_name == "yunet"


def test_recorded_backend_from_the_index_or_the_samples(tmp_path):
    import io
    import tarfile

    from preprocessing import shards

    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:  # one sample, only its metadata matters here
        data = json.dumps({"face_backend": "yunet"}).encode()
        info = tarfile.TarInfo("clip_c0000.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "shards").mkdir()
    (tmp_path / "shard-000000.tar").rename(tmp_path / "shards" / "shard-000000.tar")
    index = shards.build_index({}, [{"name": "shard-000000.tar", "num_samples": 1}], [], {})
    shards.write_json_atomic(tmp_path / "index.json", index)
    assert recorded_face_backend(tmp_path) == ("yunet", None)  # no backend in the index config: sample metadata
    index["config"] = {"face_backend": "insightface", "insightface_pack": "buffalo_l", "insightface_root": "/w/if"}
    shards.write_json_atomic(tmp_path / "index.json", index)
    assert recorded_face_backend(tmp_path) == ("insightface:buffalo_l", "/w/if")
    assert recorded_face_backend(tmp_path / "shards") == (None, None)  # a folder of raw videos: nothing recorded
