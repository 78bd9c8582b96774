"""Face backends (YuNet offline default, insightface SCRFD from a local pack) and identity embedders."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from perception import media
from perception.face_id import ArcFaceEmbedder, SFaceEmbedder, cosine_similarity
from perception.face_insightface import InsightFaceBackend
from perception.face_yunet import YuNetBackend
from perception.faces import Face, FaceModelError, make_face_backend
from preprocessing.sample_data import _asset, assets_dir
from tests.tiny_face_models import DETECTOR_FILE, make_tiny_insightface_pack


@pytest.fixture(scope="module")
def yunet():
    return make_face_backend("yunet")


@pytest.fixture(scope="module")
def astronaut():
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def carphone():
    return media.read_frames(_asset(assets_dir(), "carphone_pristine.mp4"))


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    folder = make_tiny_insightface_pack(root, "tiny")
    return root, folder


def assert_plausible(face: Face) -> None:
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert face.kps.shape == (5, 2) and face.kps.dtype == np.float32
    assert isinstance(face.score, float) and 0.0 <= face.score <= 1.0
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.kps
    assert lex < rex and lmx < rmx, "left (image-left) points must have the smaller x"
    assert max(ley, rey) < ny < min(lmy, rmy), "eyes above nose above mouth"
    x0, y0, x1, y1 = face.box
    assert x0 < face.kps[:, 0].min() and face.kps[:, 0].max() < x1
    assert y0 < face.kps[:, 1].min() and face.kps[:, 1].max() < y1


def test_yunet_finds_the_astronaut_with_plausible_keypoints(yunet, astronaut):
    (face,) = yunet.detect(astronaut)
    assert_plausible(face)
    assert face.score > 0.8 and 70 < face.size < 160
    # The convention is the image's left, so the mirror image gives the mirrored points in the same order.
    (mirrored,) = yunet.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    assert_plausible(mirrored)
    np.testing.assert_allclose(mirrored.kps[0, 0], 511 - face.kps[1, 0], atol=4)


def test_yunet_finds_one_face_on_carphone_frames(yunet, carphone):
    for i in (0, 40, 80, 119):
        faces = yunet.detect(carphone[i])
        assert len(faces) == 1, f"frame {i}"
        assert_plausible(faces[0])
    batch = yunet.detect_batch(carphone[:3])
    assert [len(f) for f in batch] == [1, 1, 1]
    np.testing.assert_array_equal(batch[2][0].kps, yunet.detect(carphone[2])[0].kps)


def test_yunet_finds_nothing_on_blank_or_noise(yunet):
    rng = np.random.default_rng(0)
    assert yunet.detect(np.zeros((256, 256, 3), np.uint8)) == []
    assert yunet.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert yunet.detect(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) == []


def test_yunet_finds_two_faces_side_by_side(yunet, astronaut, carphone):
    right = cv2.resize(carphone[0], (512 * 176 // 144 // 2 * 2, 512), interpolation=cv2.INTER_CUBIC)
    image = np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))
    faces = yunet.detect(image)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    centres = sorted(float(f.box[0] + f.box[2]) / 2 for f in faces)
    assert centres[0] < 512 < centres[1]
    for f in faces:
        assert_plausible(f)


def test_yunet_score_threshold_and_input_checks(astronaut):
    assert make_face_backend("yunet", score_threshold=0.999).detect(astronaut) == []
    with pytest.raises(ValueError, match="RGB uint8"):
        YuNetBackend().detect(astronaut.astype(np.float32))
    with pytest.raises(ValueError, match="unknown face backend"):
        make_face_backend("mtcnn")
    with pytest.raises(FaceModelError, match="nowhere.onnx"):
        YuNetBackend(model_path="/nowhere.onnx")


def test_face_row_round_trip(yunet, astronaut):
    (face,) = yunet.detect(astronaut)
    back = Face.from_row(face.to_row())
    np.testing.assert_array_equal(back.kps, face.kps)
    np.testing.assert_array_equal(back.box, face.box)
    assert back.score == pytest.approx(face.score)
    row = face.yunet_row()
    assert row.shape == (15,) and row[2] == pytest.approx(face.box[2] - face.box[0])


def _shift_scale(image: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    m = np.array([[scale, 0, dx], [0, scale, dy]], np.float32)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def test_sface_same_face_is_more_similar_than_another_face(yunet, astronaut, carphone):
    emb = SFaceEmbedder()
    (ref_face,) = yunet.detect(astronaut)
    ref = emb.embed(astronaut, ref_face)
    assert ref.shape == (128,) and ref.dtype == np.float32
    assert np.linalg.norm(ref) == pytest.approx(1.0, abs=1e-5)
    moved = _shift_scale(astronaut, 0.8, 60, 40)
    (moved_face,) = yunet.detect(moved)
    other = np.ascontiguousarray(cv2.resize(carphone[0], (352, 288), interpolation=cv2.INTER_CUBIC))
    (other_face,) = yunet.detect(other)
    same = cosine_similarity(ref, emb.embed(moved, moved_face))
    different = cosine_similarity(ref, emb.embed(other, other_face))
    assert same > 0.6 and same > different + 0.2, (same, different)
    assert emb.align(astronaut, ref_face).shape == (112, 112, 3)


def test_tiny_scrfd_is_routed_as_an_insightface_detector(tiny_pack):
    from insightface.app import FaceAnalysis

    root, _ = tiny_pack
    app = FaceAnalysis(name="tiny", root=str(root), allowed_modules=["detection"], providers=["CPUExecutionProvider"])
    assert type(app.det_model).__name__ == "SCRFD" and app.det_model.use_kps


def test_insightface_backend_output_format_and_thresholds(tiny_pack, astronaut):
    root, folder = tiny_pack
    counts = []
    for threshold in (0.2, 0.5, 0.8, 0.9999):
        backend = make_face_backend("insightface", root=root, pack="tiny", det_size=(256, 256),
                                    score_threshold=threshold)
        assert isinstance(backend, InsightFaceBackend)
        faces = backend.detect(astronaut[:400])  # non-square frame: letterboxed into det_size
        counts.append(len(faces))
        for f in faces:
            assert f.box.shape == (4,) and f.box.dtype == np.float32
            assert f.kps.shape == (5, 2) and f.kps.dtype == np.float32
            assert isinstance(f.score, float) and threshold <= f.score <= 1.0
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert counts[0] > 0 and counts[-1] == 0
    assert counts == sorted(counts, reverse=True)
    by_file = InsightFaceBackend(model_path=folder / DETECTOR_FILE, det_size=(256, 256), score_threshold=0.5)
    assert [len(f) for f in by_file.detect_batch([astronaut, astronaut])] == [len(by_file.detect(astronaut))] * 2


def test_insightface_missing_pack_names_the_path(tmp_path):
    with pytest.raises(FaceModelError, match=str(tmp_path / "models" / "buffalo_l")):
        make_face_backend("insightface", root=tmp_path, pack="buffalo_l")
    with pytest.raises(FaceModelError, match="det_10g.onnx"):
        InsightFaceBackend(model_path=tmp_path / "det_10g.onnx")


def test_arcface_embedder_with_tiny_model(tiny_pack, yunet, astronaut):
    _, folder = tiny_pack
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skimage's deprecation inside insightface's norm_crop
        emb = ArcFaceEmbedder(folder)
        (face,) = yunet.detect(astronaut)
        v = emb.embed(astronaut, face)
        assert v.shape == (512,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_array_equal(v, emb.embed(astronaut, face))
        assert emb.align(astronaut, face).shape == (112, 112, 3)
    with pytest.raises(FaceModelError, match="not an insightface recognition model"):
        ArcFaceEmbedder(folder / DETECTOR_FILE)
    with pytest.raises(FaceModelError, match="missing_dir"):
        ArcFaceEmbedder(folder.parent / "missing_dir")


def test_pack_models_are_told_apart_as_insightface_routes_them(tiny_pack):
    from insightface.app import FaceAnalysis

    from perception.face_insightface import find_pack_model, pack_model_kind
    from tests.tiny_face_models import LANDMARK_FILE, RECOGNIZER_FILE

    root, folder = tiny_pack
    kinds = {p.name: pack_model_kind(p) for p in folder.glob("*.onnx")}
    assert kinds == {DETECTOR_FILE: "detection", RECOGNIZER_FILE: "recognition", LANDMARK_FILE: "landmark_2d_106"}
    # A 192x192 landmark model is square, >= 112 and a multiple of 16: it must not pass for the recognizer.
    assert find_pack_model(root, "tiny", "recognition").name == RECOGNIZER_FILE
    assert find_pack_model(root, "tiny", "landmark_2d_106").name == LANDMARK_FILE
    assert find_pack_model(root, "tiny", "landmark_3d_68", optional=True) is None
    app = FaceAnalysis(name="tiny", root=str(root), providers=["CPUExecutionProvider"])
    assert "landmark_2d_106" in app.models


def test_insightface_backend_gives_the_106_point_lips(tiny_pack, astronaut):
    from tests.tiny_face_models import LANDMARK_FILE

    root, folder = tiny_pack
    backend = make_face_backend("insightface", root=root, pack="tiny", det_size=(256, 256), score_threshold=0.5)
    faces = backend.detect(astronaut)
    assert faces and backend.landmarker is not None
    for f in faces:
        assert f.lips.shape == (20, 2) and f.lips.dtype == np.float32
        centre, reach = (f.box[:2] + f.box[2:]) / 2, 0.75 * max(f.box[2:] - f.box[:2]) + 1
        assert np.all(np.abs(f.lips - centre) <= reach)  # inside the landmark model's crop (1.5 x the box)
        np.testing.assert_array_equal(f.lip_box, np.concatenate([f.lips.min(0), f.lips.max(0)]))
    plain = make_face_backend("insightface", root=root, pack="tiny", det_size=(256, 256), score_threshold=0.5,
                              landmarks=False)
    assert all(f.lips is None and f.lip_box is None for f in plain.detect(astronaut))
    assert InsightFaceBackend(model_path=folder / DETECTOR_FILE, det_size=(256, 256)).landmarker is None
    with pytest.raises(FaceModelError, match="not a 106-point"):
        InsightFaceBackend(model_path=folder / DETECTOR_FILE, landmark_path=folder / DETECTOR_FILE)
    with_file = InsightFaceBackend(model_path=folder / DETECTOR_FILE, landmark_path=folder / LANDMARK_FILE,
                                   det_size=(256, 256), score_threshold=0.5)
    np.testing.assert_array_equal(with_file.detect(astronaut)[0].lips, faces[0].lips)
