"""The ``vexpress`` command: help for every subcommand, one flag style, one-line errors naming the nearest key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.vexpress import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_commands_and_config_sections(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("preprocess", "train", "generate", "evaluate", "verify", "print-config"):
        assert f"\n  {command} " in out
    assert "training/config.py::TrainConfig" in out and "infra/tracking.py::TrackingConfig" in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vexpress {command} ")
    if command != "preprocess":  # the checkpoint-taking commands explain --config's default
        assert "--config" in out
    assert ".py::" in out  # where the config dataclasses it reads live


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["print-config", "--help"])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "every key with its default" in out and "0: one per visible GPU" in out


def test_module_entry_point_runs():
    """The console script ``vexpress`` (pyproject [project.scripts]) and ``python -m infra.vexpress`` are one."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vexpress"] == "infra.vexpress:main"
    proc = subprocess.run([sys.executable, "-m", "infra.vexpress", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: vexpress <command>")


@pytest.mark.parametrize("argv,key,nearest", [
    (["print-config", "train.lrr=1e-4"], "train.lrr", "train.lr"),
    (["print-config", "--config", "sd15/stage2", "data.numframes=4"], "data.numframes", "data.num_frames"),
    (["train", "--config", "tiny/stage1", "crop_size=7"], "crop_size", "preprocess.crop_size"),
    (["generate", "--reference", "r.png", "--audio", "a.wav", "--output", "o.mp4", "inference.step=2"],
     "inference.step", "inference."),
    (["evaluate", "--test-set", "x", "eval.fid_dim=64"], "eval.fid_dim", "eval.fid_dims"),
])
def test_bad_override_is_one_line_naming_the_key_and_the_nearest(argv, key, nearest, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"{key}: no such config key; did you mean {nearest}" in err[0]


def test_bad_key_in_a_yaml_names_the_file(tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("base: " + str(REPO / "configs/tiny/stage1.yaml") + "\ntrain:\n  lrr: 1\n")
    assert main(["print-config", "--config", str(tmp_path / "mine.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "mine.yaml: train.lrr: no such config key; did you mean train.lr?" in err


def test_argument_errors_and_unknown_commands_are_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["generate", "--audio", "a.wav"])
    assert done.value.code == 2
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vexpress generate: error: the following arguments are required: --reference, --output "
                   "(see vexpress generate --help)",
                   "vexpress: error: unknown command 'trian'; did you mean train? (vexpress --help)"]


def test_print_config_prints_a_section_with_its_source(capsys):
    assert main(["print-config", "--config", "sd15/stage2", "--section", "train", "train.lr=3e-6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# config: sd15/stage2\n# train: training/config.py::TrainConfig\ntrain:\n")
    assert "  stage: 2\n" in out and "  lr: 3.0e-06\n" in out and "model:" not in out


def test_train_builds_the_deepspeed_command(capsys):
    assert main(["train", "--config", "tiny/stage2", "--ranks", "2", "--master-port", "29999", "--dry-run",
                 "--resume", "auto", "data.shards=/data/x"]) == 0
    line = capsys.readouterr().out.strip()
    assert "deepspeed --num_gpus 2 --master_addr 127.0.0.1 --master_port 29999 " in line
    assert line.endswith("training/run.py --config tiny/stage2 --resume auto data.shards=/data/x")
    assert main(["train", "--config", "tiny/stage1", "--ranks", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("training/run.py --config tiny/stage1")


def test_sd15_presets_use_one_face_backend():
    from infra.config_tree import load

    for preset in ("sd15/stage1", "sd15/stage2", "sd15/stage3", "sd15-official/stage1", "sd15-official/stage3"):
        cfg = load(preset)
        assert {cfg.preprocess.face_backend, cfg.inference.face_backend, cfg.eval.face_backend} == {"insightface"}
        assert cfg.preprocess.insightface_root == "weights/insightface"
