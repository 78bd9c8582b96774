#!/usr/bin/env bash
# Fetch every weight file the sd15 presets name, into weights/ (or DEST), on a machine with Hugging Face hub access.
#   bash scripts/fetch_weights.sh [DEST] [--with-eval] [--official-init]
# Idempotent: files already there are not fetched again (the hub client checks). Gated or licensed models need
# `hf auth login` first. --with-eval adds the evaluation networks (FID Inception, FVD I3D, SyncNet) from their
# authors' release pages; --official-init adds sd-image-variations-diffusers (the sd15-official stage I init).
# Layout written (docs/walkthrough.md, docs/real-data.md):
#   DEST/stable-diffusion-v1-5/{model_index.json,unet/}   DEST/sd-vae-ft-mse/   DEST/wav2vec2-base-960h/
#   DEST/mm_sd_v15_v2.ckpt   DEST/insightface/models/buffalo_l/*.onnx   DEST/vexpress/*.bin   [DEST/eval/*]
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="weights"; WITH_EVAL=0; OFFICIAL_INIT=0
for arg in "$@"; do
  case "$arg" in
    --with-eval) WITH_EVAL=1 ;;
    --official-init) OFFICIAL_INIT=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "fetch_weights: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) DEST="$arg" ;;
  esac
done
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$DEST"
export HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0  # scripts/env.sh turns the hub off for everything else

DEST="$DEST" OFFICIAL_INIT="$OFFICIAL_INIT" "$PY" - <<'EOF'
import os
import shutil
from pathlib import Path

from huggingface_hub import hf_hub_download, snapshot_download

dest = Path(os.environ["DEST"])


def snapshot(repo: str, folder: str, patterns: list[str]) -> None:
    print(f"fetch_weights: {repo} {patterns} -> {dest / folder}", flush=True)
    snapshot_download(repo, allow_patterns=patterns, local_dir=dest / folder)


# SD1.5: the UNet initialises both V-Express UNets in stage I (model.pretrained.sd15).
snapshot("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5",
         ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"])
# The VAE (model.pretrained.vae).
snapshot("stabilityai/sd-vae-ft-mse", "sd-vae-ft-mse", ["config.json", "diffusion_pytorch_model.safetensors"])
# The audio encoder (model.pretrained.audio_encoder, preprocess.audio_encoder_path).
snapshot("facebook/wav2vec2-base-960h", "wav2vec2-base-960h", ["*.json", "*.txt", "model.safetensors"])
if not (dest / "wav2vec2-base-960h" / "model.safetensors").is_file():
    snapshot("facebook/wav2vec2-base-960h", "wav2vec2-base-960h", ["pytorch_model.bin"])
# AnimateDiff motion prior for stage II (model.pretrained.motion_module).
print("fetch_weights: guoyww/animatediff mm_sd_v15_v2.ckpt", flush=True)
hf_hub_download("guoyww/animatediff", "mm_sd_v15_v2.ckpt", local_dir=dest)
# The official V-Express release: the five checkpoint files and the insightface buffalo_l pack it ships.
snapshot("tk93/V-Express", ".hub-vexpress", ["model_ckpts/v-express/*", "model_ckpts/insightface_models/models/buffalo_l/*"])
hub = dest / ".hub-vexpress" / "model_ckpts"
for source, target in ((hub / "v-express", dest / "vexpress"),
                       (hub / "insightface_models" / "models" / "buffalo_l", dest / "insightface" / "models" / "buffalo_l")):
    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and not (target / f.name).exists():
            shutil.copy2(f, target / f.name)
if os.environ.get("OFFICIAL_INIT") == "1":  # configs/sd15-official: the released stage I base model
    snapshot("lambdalabs/sd-image-variations-diffusers", "sd-image-variations-diffusers",
             ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.*"])
print("fetch_weights: hub weights done", flush=True)
EOF

if [ "$WITH_EVAL" = 1 ]; then
  mkdir -p "$DEST/eval"
  get() { [ -s "$DEST/eval/$1" ] || { echo "fetch_weights: $1 <- $2"; curl -fL --retry 3 -o "$DEST/eval/$1.part" "$2" && mv "$DEST/eval/$1.part" "$DEST/eval/$1"; }; }
  get pt_inception-2015-12-05-6726825d.pth \
    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  get i3d_torchscript.pt "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"
  get syncnet_v2.model https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model
fi

"$PY" -m model.checkpoints verify --checkpoint "$DEST/vexpress" --config sd15 | tail -1
du -sh "$DEST"/* 2>/dev/null | grep -v '\.hub-' || true
