"""``python -m infra.generate`` (also ``vexpress generate``): the command line of :func:`model.generate.generate`.

    python -m infra.generate --reference ref.jpg --audio speech.wav --output out.mp4 \
        [--kps kps.npy | --driving-video drive.mp4] [--checkpoint runs/tiny/stage3] [--config tiny/stage3] \
        [inference.num_inference_steps=10 inference.retarget_strategy=naive_retarget ...]

The config is the one saved beside ``--checkpoint`` unless ``--config`` is given; what the options mean and what
the video holds: ``model/generate.py``.
"""

from __future__ import annotations

import argparse

from infra.cli import Parser, add_checkpoint_arguments, logged_main
from infra.config_tree import load_for_checkpoint
from model.generate import generate


def parse_args(argv=None) -> argparse.Namespace:
    ap = Parser("python -m infra.generate", description="a talking-head mp4 from a reference image, audio and V-Kps / a driving video",
                sections=("inference", "model", "preprocess"))
    ap.add_argument("--reference", required=True, help="reference image (jpg/png/...)")
    ap.add_argument("--audio", required=True, help="audio file (wav/mp3/m4a/..., resampled to 16 kHz mono)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--kps", help="V-Kps sequence (.npy/.json/.pt (frames, >=3, 2) pixels)")
    src.add_argument("--driving-video", help="video whose face keypoints drive the head pose")
    ap.add_argument("--output", required=True, help="output .mp4")
    add_checkpoint_arguments(ap, checkpoint_default="model.pretrained.vexpress")
    ap.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. inference.num_inference_steps=10")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    return logged_main("generate", parse_args, _run, argv)


def _run(args: argparse.Namespace) -> int:
    cfg, _ = load_for_checkpoint(args.config, args.checkpoint, args.overrides)
    print(generate(cfg, args.reference, args.audio, args.output, args.kps, args.driving_video, args.checkpoint))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
