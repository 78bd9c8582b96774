# Sourced by the Makefile: keeps everything offline, on loopback and CPU-friendly.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
export MLFLOW_ENABLE_TELEMETRY=false
export DO_NOT_TRACK=1
export RAY_USAGE_STATS_ENABLED=0
export RAY_DISABLE_DOCKER_CPU_WARNING=1
# One persistent cache for DeepSpeed's JIT-compiled ops, so each machine compiles them once.
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}"
export VEXPRESS_ASSETS="${VEXPRESS_ASSETS:-$HOME/.cache/vexpress/assets}"
# OpenMP threads that spin while they wait make every step many times slower when the cores are shared
# (Ray workers, two ranks, a test beside a demo); sleeping waiters cost little on an idle machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
