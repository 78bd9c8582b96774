"""`deepspeed --hostfile` with two "nodes" that both reach 127.0.0.1 over a test-owned sshd (DeepSpeed's pdsh
launcher, one slot each) trains tiny stage I exactly like a single-node 2-rank run; killing the second node's rank
mid-run ends the whole job, and `--resume auto` finishes it with the uninterrupted run's weights. Every rank of
every run listens on loopback only (the rendezvous of a loopback master address: training/rendezvous.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from infra.net import free_port
from tests.infra.conftest import REPO, ListenWatch, tree

STEPS, EVERY = 6, 2
# DeepSpeed's runner forwards only PYTHON*/MLFLOW*/... variables to the nodes; the rest of scripts/env.sh goes in
# ~/.deepspeed_env (one KEY=VALUE a line), which it exports on every node.
NODE_ENV = ("OMP_NUM_THREADS", "TORCH_EXTENSIONS_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
            "TOKENIZERS_PARALLELISM", "DO_NOT_TRACK")
RUNS: dict[str, dict] = {}  # name -> {"out", "listening", "seconds", "returncode"}


@pytest.fixture(scope="module")
def ds_shards(tmp_path_factory) -> Path:
    from training.synthetic_shards import write_synthetic_shards

    return write_synthetic_shards(tmp_path_factory.mktemp("ds_shards"))


@pytest.fixture(scope="module")
def hostfile(sshd, tmp_path_factory) -> Path:
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "1",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path.home() / ".cache" / "torch_extensions"))}
    (sshd.home / ".deepspeed_env").write_text("".join(f"{k}={env[k]}\n" for k in NODE_ENV))
    path = tmp_path_factory.mktemp("hosts") / "hostfile"
    path.write_text("localhost slots=1\n127.0.0.1 slots=1\n")  # two host entries, one rank each, same sshd
    return path


def launch(out: Path, shards: Path, hostfile: Path | None = None, server=None,
           resume: bool = False) -> tuple[subprocess.Popen, ListenWatch]:
    launcher = shutil.which("deepspeed") or str(Path(sys.executable).parent / "deepspeed")
    where = (["--hostfile", str(hostfile), "--master_addr", "127.0.0.1"] if hostfile else ["--num_gpus", "2"])
    cmd = [launcher, *where, "--master_port", str(free_port()), str(REPO / "training" / "run.py"),
           "--config", "tiny/stage1", f"data.shards={shards}", f"train.output_dir={out}",
           f"train.max_steps={STEPS}", f"train.checkpoint_every={EVERY}", "train.keep_last=5",
           "train.validate_every=0", "data.num_workers=1", *(["--resume", "auto"] if resume else [])]
    base = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env = server.env(HOME=str(server.home), **base) if server else {**os.environ, **base}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = ListenWatch(lambda: tree([proc.pid, *([server.proc.pid] if server else [])]))
    return proc, watch


def finish(name: str, proc: subprocess.Popen, watch: ListenWatch, out: Path, t0: float,
           timeout: float = 900) -> str:
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in run_processes(out):
            p.kill()
        proc.kill()
        log, _ = proc.communicate()
        watch.stop()
        pytest.fail(f"{name}: no end after {timeout} s:\n{log[-6000:]}")
    RUNS[name] = {"out": out, "listening": watch.stop(), "not_loopback": watch.not_loopback(),
                  "seconds": time.perf_counter() - t0, "returncode": proc.returncode}
    print(f"{name}: exit {proc.returncode} after {RUNS[name]['seconds']:.1f} s")
    return log


def losses(out: Path) -> dict[int, float]:
    """Per step, the last loss MLflow recorded for the run (a resumed run logs into the same MLflow run)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vexpress")
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in history}


def weights(out: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    export = out / "checkpoints" / f"step-{step:06d}" / "export"
    return {f"{f.stem}.{k}": v for f in sorted(export.glob("*.safetensors")) for k, v in load_file(f).items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Equal within float tolerance; returns the largest absolute difference."""
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    return max(float((a[n].double() - b[n].double()).abs().max()) for n in a)


def run_processes(out: Path) -> list[psutil.Process]:
    """Every process of the run writing to ``out``: launcher, pdsh/ssh, node launchers, ranks, loader workers."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(f"train.output_dir={out}" in a for a in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def rank_process(out: Path, rank: int) -> psutil.Process | None:
    """The training process of global rank ``rank`` (started by a node's launcher with ``--local_rank``)."""
    for p in run_processes(out):
        try:
            if any(a.startswith("--local_rank=") for a in p.cmdline()) and p.environ().get("RANK") == str(rank) \
                    and "deepspeed.launcher.launch" in " ".join(p.parent().cmdline()):
                return p
        except psutil.Error:
            continue
    return None


@pytest.fixture(scope="module")
def single_node(ds_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "stage1"
    t0 = time.perf_counter()
    proc, watch = launch(out, ds_shards)
    log = finish("single-node 2 ranks", proc, watch, out, t0)
    assert proc.returncode == 0, log[-6000:]
    return out


@pytest.fixture(scope="module")
def two_nodes(ds_shards, hostfile, sshd, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two_nodes") / "stage1"
    t0 = time.perf_counter()
    proc, watch = launch(out, ds_shards, hostfile, sshd)
    log = finish("two nodes (pdsh)", proc, watch, out, t0)
    assert proc.returncode == 0, log[-6000:]
    assert "localhost: " in log and "127.0.0.1: " in log  # pdsh's per-host output: both hosts ran a node
    return out


@pytest.mark.slow
def test_two_hostfile_nodes_train_like_one_node(single_node, two_nodes):
    one, two = losses(single_node), losses(two_nodes)
    print("losses, single node:", [round(one[s], 6) for s in sorted(one)])
    print("losses, two nodes:  ", [round(two[s], 6) for s in sorted(two)])
    assert sorted(one) == list(range(1, STEPS + 1)) and sorted(two) == sorted(one)
    assert [two[s] for s in sorted(two)] == pytest.approx([one[s] for s in sorted(one)], rel=1e-5, abs=1e-7)
    for step in range(EVERY, STEPS + 1, EVERY):
        diff = assert_same_weights(weights(two_nodes, step), weights(single_node, step))
        print(f"step {step}: largest weight difference two nodes vs one node {diff:.3g}")


@pytest.mark.slow
def test_killing_a_nodes_rank_ends_the_job_and_resume_finishes_it(two_nodes, ds_shards, hostfile, sshd,
                                                                   tmp_path):
    out = tmp_path / "killed" / "stage1"
    t0 = time.perf_counter()
    proc, watch = launch(out, ds_shards, hostfile, sshd)
    latest, victim = out / "checkpoints" / "latest", None
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        victim = victim or rank_process(out, rank=1)  # node 1's rank, found early
        if victim and latest.is_file() and latest.read_text() == f"step-{EVERY:06d}":
            break
        time.sleep(0.05)
    assert proc.poll() is None and victim is not None, "the run ended before its second node's rank was killed"
    victim.send_signal(signal.SIGKILL)
    t_kill = time.perf_counter()
    log = finish("two nodes, rank 1 killed", proc, watch, out, t0)
    ended_s = time.perf_counter() - t_kill
    assert proc.returncode != 0, log[-4000:]  # the launcher reports the failure ...
    time.sleep(2)
    assert not run_processes(out), "processes of the job outlived the launcher"  # ... and nothing of the job is left running
    killed_at = latest.read_text()
    assert killed_at != f"step-{STEPS:06d}", "the kill came after the last checkpoint"
    print(f"rank 1 killed after {killed_at}; the launcher exited {ended_s:.1f} s later with {proc.returncode}")
    print("\n".join(line[:200] for line in log.splitlines() if "return code" in line or "Error:" in line))

    t0 = time.perf_counter()
    proc, watch = launch(out, ds_shards, hostfile, sshd, resume=True)
    log = finish("two nodes, --resume auto", proc, watch, out, t0)
    assert proc.returncode == 0, log[-6000:]
    assert f"resumed from {out / 'checkpoints' / killed_at}" in log
    diff = assert_same_weights(weights(out, STEPS), weights(two_nodes, STEPS))
    resumed, straight = losses(out), losses(two_nodes)
    print(f"resumed: largest final weight difference vs the uninterrupted run {diff:.3g}; losses after resume",
          [round(resumed[s], 6) for s in sorted(resumed)])
    assert [resumed[s] for s in sorted(straight)] == pytest.approx([straight[s] for s in sorted(straight)],
                                                                   rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_training_listens_on_loopback_only(single_node, two_nodes):
    """--master_addr 127.0.0.1: the rendezvous (rank 0's TCPStore) and gloo listen on 127.0.0.1, not on all
    interfaces as torch's env:// rendezvous does."""
    assert RUNS, "no run recorded"
    for name, run in RUNS.items():
        assert run["listening"], f"{name}: no listening socket seen (the watcher missed the ranks)"
        assert not run["not_loopback"], f"{name} listened beyond loopback: {run['not_loopback']}"
