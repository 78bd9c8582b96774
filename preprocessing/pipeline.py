"""Distributed preprocessing on Ray: raw videos -> WebDataset shards (docs/shard-format.md).

Stages (docs/preprocessing.md has the picture):

- ``probe`` task per video: container facts, 16 kHz mono audio, clip spans (bad inputs -> rejected).
- per clip: ``decode`` task (seek + resample to fps) -> ``FaceActor.detect`` (actor pool, holds the detector)
  and ``AudioActor.features`` (actor pool, holds the audio encoder) -> ``crop_encode`` task (track check, stable
  crop, kps, mouth boxes, h264 + wav + npy members) -> optionally ``VaeActor.add_latents``.
- ``commit`` task per video: its samples and rejections go to ``work/videos/<video_id>.{tar,json}`` atomically.
- when every video is committed: a deterministic packing of all samples (sorted by video id, then clip) into
  shards; one ``write_shard`` task per shard (atomic); then ``rejected.jsonl`` and ``index.json``.

Backpressure: at most ``max_clips_in_flight`` clips and ``num_workers + 1`` probed videos are in the system.
Resuming: committed videos (recorded with the current output fingerprint) and finished shards are skipped; the
index only depends on the inputs and config, so a resumed run writes the same index as an uninterrupted one. Ray
retries tasks of dead workers and restarts dead actors (``max_retries``); commits are idempotent (same name, same
bytes), so nothing is lost or duplicated. The driver holds the output's lock, refuses a changed output config and
keeps byte-identical inputs once (``preprocessing.output_dir``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections import deque
from pathlib import Path
from typing import Any

from preprocessing import output_dir, shards, stages
from preprocessing.config import PreprocessConfig, index_config, output_fingerprint
from preprocessing.inputs import list_inputs
from preprocessing.ray_session import InfraFailure, describe_error, init_ray, is_infra_error
from preprocessing.tasks import (
    AudioActor,
    FaceActor,
    VaeActor,
    commit_task,
    crop_encode_task,
    decode_task,
    face_backend_name,
    probe_task,
    write_shard_task,
)

log = logging.getLogger("preprocess")


@dataclasses.dataclass
class _Video:
    plan: stages.VideoPlan
    local: str
    audio_ref: Any
    next_span: int = 0
    payloads: dict = dataclasses.field(default_factory=dict)  # span index -> payload ref
    done: int = 0
    failed: str = ""  # infrastructure error seen on one of its clips: retry the whole video


class Progress:
    def __init__(self, total: int, every_s: float) -> None:
        self.total, self.every_s, self.t0 = total, every_s, time.perf_counter()
        self.videos = self.kept = self.rejected = 0
        self.seconds = 0.0
        self._last = 0.0

    def add(self, kept: int, rejected: int, seconds: float) -> None:
        self.videos += 1
        self.kept, self.rejected, self.seconds = self.kept + kept, self.rejected + rejected, self.seconds + seconds
        self.maybe_print()

    def line(self) -> str:
        wall = time.perf_counter() - self.t0
        return (f"[preprocess] videos {self.videos}/{self.total} | clips kept {self.kept} rejected {self.rejected} | "
                f"{self.seconds / 3600:.3f} h processed | {self.seconds / max(wall, 1e-9):.2f} video-s/s | {wall:.0f} s")

    def maybe_print(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._last >= self.every_s or self.videos == self.total:
            self._last = now
            print(self.line(), flush=True)


class Preprocessor:
    """Runs the stages for a list of sources on an initialised Ray (see :func:`run`)."""

    def __init__(self, cfg: PreprocessConfig, output: Path) -> None:
        self.cfg, self.output = cfg, output
        self.work = output / "work"
        self.video_dir = self.work / "videos"
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self.attempts: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.fingerprint = output_dir.fingerprint_id(output_fingerprint(cfg))
        self.content_owner: dict[str, dict] = {}  # content sha256 -> the record of the first video id seen with it

    def record(self, source: str) -> dict | None:
        """The video's record when it was processed with the current output fingerprint, else None (to do)."""
        path = self.video_dir / f"{shards.video_id_for(source)}.json"
        if not path.is_file():
            return None
        rec = json.loads(path.read_text())
        return rec if rec.get("fingerprint") == self.fingerprint else None

    def _claim_content(self, rec: dict) -> dict | None:
        """Note ``rec``'s content hash; returns the record of a video with a smaller id and the same content."""
        sha = rec.get("content_sha256")
        if not sha:
            return None
        owner = self.content_owner.get(sha)
        if owner is not None and owner["video_id"] < rec["video_id"]:
            return owner
        self.content_owner[sha] = rec
        return None

    # --- model folders: a configured local folder, or a tiny random model saved once under work/
    def audio_path(self) -> tuple[str, str]:
        if self.cfg.audio_encoder == "mel":
            return "", f"mel:{self.cfg.mel_bins}"
        if self.cfg.audio_encoder_path:
            return self.cfg.audio_encoder_path, f"{self.cfg.audio_encoder}:{Path(self.cfg.audio_encoder_path).name}"
        from perception.audio import save_tiny_wav2vec2

        folder = self.work / "tiny_wav2vec2"
        if not (folder / "config.json").exists():
            save_tiny_wav2vec2(folder.with_name("tiny_wav2vec2.tmp"))
            os.replace(folder.with_name("tiny_wav2vec2.tmp"), folder)
        return str(folder), "wav2vec2:tiny-random"

    def vae_path(self) -> str:
        if self.cfg.vae_path:
            return self.cfg.vae_path
        import torch
        from diffusers import AutoencoderKL

        folder = self.work / "tiny_vae"
        if not (folder / "config.json").exists():
            torch.manual_seed(0)
            AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          ).save_pretrained(folder.with_name("tiny_vae.tmp"))
            os.replace(folder.with_name("tiny_vae.tmp"), folder)
        return str(folder)

    def _remotes(self):
        import ray

        c = self.cfg
        opts = {"num_cpus": c.task_num_cpus, "max_retries": c.max_retries}
        # SPREAD: the model pools get replicas on every node rather than filling the driver's node first (Ray's
        # default), so each node's tasks have a detector and an encoder nearby and losing a node loses part of a
        # pool, not all of it (those actors restart elsewhere).
        actor_opts = {"num_cpus": c.actor_num_cpus, "num_gpus": c.actor_num_gpus if c.use_gpu else 0,
                      "max_restarts": c.max_retries, "max_task_retries": c.max_retries, "scheduling_strategy": "SPREAD"}
        return dict(
            probe=ray.remote(probe_task).options(num_returns=2, **opts),
            decode=ray.remote(decode_task).options(**opts),
            crop=ray.remote(crop_encode_task).options(num_returns=2, **opts),
            commit=ray.remote(commit_task).options(**opts),
            write=ray.remote(write_shard_task).options(**opts),
            face=ray.remote(FaceActor).options(**actor_opts),
            audio=ray.remote(AudioActor).options(**actor_opts),
            vae=ray.remote(VaeActor).options(**actor_opts),
        )

    def process_videos(self, sources: list[str]) -> None:
        import ray

        c = self.cfg
        todo = []
        for s in sources:
            rec = self.record(s)
            if rec is None:
                todo.append(s)
            else:
                self._claim_content(rec)
        progress = Progress(len(sources), c.progress_every_s)
        progress.videos = len(sources) - len(todo)
        if not todo:
            return
        r = self._remotes()
        audio_path, audio_name = self.audio_path()
        names = {"face": face_backend_name(c), "audio": audio_name}
        faces = [r["face"].remote(c) for _ in range(c.num_workers)]
        audios = [r["audio"].remote(c, audio_path) for _ in range(c.num_workers)]
        vaes = [r["vae"].remote(c, self.vae_path()) for _ in range(c.num_workers)] if c.precompute_latents else []
        ray.get([a.ready.remote() for a in faces + audios + vaes])  # models loaded: start the clock
        t_start = time.perf_counter()
        max_clips = c.max_clips_in_flight or 4 * c.num_workers
        pending, probes, active, clips_inflight, commits = deque(todo), {}, {}, {}, {}
        rr = 0
        while pending or probes or active or commits:
            while pending and len(probes) + len(active) < c.num_workers + 1:
                src = pending.popleft()
                meta_ref, audio_ref = r["probe"].remote(src, c, str(self.work / "inputs"))
                probes[meta_ref] = (src, audio_ref)
            for video in list(active.values()):  # fill the clip window, oldest video first
                while len(clips_inflight) < max_clips and video.next_span < len(video.plan.spans):
                    span = video.plan.spans[video.next_span]
                    video.next_span += 1
                    rr += 1
                    start = span.start_s(video.plan.fps)
                    frames = r["decode"].remote(video.local, start, span.num_frames, video.plan.fps)
                    dets = faces[rr % len(faces)].detect.remote(frames)
                    feats = (audios[rr % len(audios)].features.remote(video.audio_ref, start, span.num_frames,
                                                                      video.plan.fps)
                             if video.plan.has_audio else None)
                    summary, payload = r["crop"].remote(video.plan, span, frames, dets,
                                                        video.audio_ref if video.plan.has_audio else None, feats, c,
                                                        names)
                    if vaes:
                        payload = vaes[rr % len(vaes)].add_latents.remote(payload)
                    video.payloads[span.index] = payload
                    clips_inflight[summary] = (video.plan.video_id, span.index)
            waiting = list(probes) + list(clips_inflight) + list(commits)
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in probes:
                    self._on_probe(ref, probes.pop(ref), active, progress, pending)
                elif ref in clips_inflight:
                    vid, span_index = clips_inflight.pop(ref)
                    video = active[vid]
                    video.done += 1
                    try:
                        ray.get(ref)
                    except Exception as exc:
                        if is_infra_error(exc):
                            video.failed = describe_error(exc, 300)
                        else:  # the input made our code fail: reject that clip with the error, go on
                            rej = stages.Rejection(video.plan.source, "error", describe_error(exc), span_index)
                            video.payloads[span_index] = ray.put({"rejection": rej.as_dict()})
                    if video.done == len(video.plan.spans):
                        del active[vid]
                        if video.failed:
                            self._retry(video.plan.source, video.failed, pending)
                            continue
                        payloads = [video.payloads[i] for i in range(len(video.plan.spans))]
                        commits[r["commit"].remote(str(self.video_dir), video.plan, self.fingerprint,
                                                   *payloads)] = video.plan.source
                else:
                    src = commits.pop(ref)
                    try:
                        res = ray.get(ref)
                    except Exception as exc:
                        if not is_infra_error(exc):
                            raise
                        self._retry(src, describe_error(exc, 300), pending)
                        continue
                    progress.add(res["kept"], res["rejected"], res["seconds"])
            progress.maybe_print()
        progress.maybe_print(force=True)
        wall = time.perf_counter() - t_start
        self.throughput = {"video_seconds": progress.seconds, "wall_s": wall,
                           "video_s_per_s": progress.seconds / max(wall, 1e-9)}
        print(f"[preprocess] throughput: {progress.seconds:.1f} video-s in {wall:.1f} s after model loading = "
              f"{self.throughput['video_s_per_s']:.2f} video-s/s", flush=True)
        for actor in faces + audios + vaes:
            ray.kill(actor)
        if self.failed:
            raise InfraFailure(f"{len(self.failed)} video(s) failed for infrastructure reasons after "
                               f"{self.cfg.max_retries} retries (nothing recorded for them; rerun the same command "
                               f"to resume): " + "; ".join(f"{s}: {e}" for s, e in sorted(self.failed.items()))[:2000])

    def _retry(self, source: str, error: str, pending: deque) -> None:
        self.attempts[source] = self.attempts.get(source, 0) + 1
        if self.attempts[source] <= self.cfg.max_retries:
            print(f"[preprocess] retrying {source} after: {error}", flush=True)
            pending.append(source)
        else:
            self.failed[source] = error

    def _on_probe(self, ref, item, active: dict, progress: Progress, pending: deque) -> None:
        import ray

        src, audio_ref = item
        try:
            meta = ray.get(ref)
        except Exception as exc:
            if is_infra_error(exc):
                self._retry(src, describe_error(exc, 300), pending)
                return
            meta = {"rejection": stages.Rejection(src, "error", describe_error(exc)).as_dict()}
        if "rejection" in meta:
            vid = shards.video_id_for(src)
            shards.write_json_atomic(self.video_dir / f"{vid}.json",
                                     {"source": src, "video_id": vid, "duration_s": 0.0, "samples": [],
                                      "rejected": [meta["rejection"]], "fingerprint": self.fingerprint})
            progress.add(0, 1, 0.0)
            return
        plan = meta["plan"]
        rec = {"source": plan.source, "video_id": plan.video_id, "duration_s": plan.duration_s, "samples": [],
               "fingerprint": self.fingerprint, "content_sha256": plan.content_sha256}
        keeper = self._claim_content(rec)
        if keeper is not None:  # a copy of a video already seen: not processed again (resolve_duplicates reports it)
            rec["rejected"] = [output_dir.duplicate_rejection(rec, keeper)]
            shards.write_json_atomic(self.video_dir / f"{plan.video_id}.json", rec)
            progress.add(0, 1, 0.0)
            return
        active[plan.video_id] = _Video(plan, meta["local"], audio_ref)

    def write_shards(self, sources: list[str]) -> dict:
        """Pack every committed sample into shards (skipping finished ones) and write the index."""
        import ray

        ordered = sorted(sources, key=shards.video_id_for)
        records = output_dir.resolve_duplicates(  # byte-identical inputs: the first video id keeps the samples
            [json.loads((self.video_dir / f"{shards.video_id_for(s)}.json").read_text()) for s in ordered])
        sample_info = {s["key"]: (rec["video_id"], s) for rec in records for s in rec["samples"]}
        plan = shards.pack_shards([(s["key"], s["bytes"]) for rec in records for s in rec["samples"]],
                                  self.cfg.shard_max_bytes)
        shard_dir, done_dir = self.output / "shards", self.work / "shards"
        shard_dir.mkdir(parents=True, exist_ok=True)
        write = self._remotes()["write"]
        results: dict[int, Any] = {}
        for i, keys in enumerate(plan):
            name = shards.SHARD_PATTERN.format(i)
            done = done_dir / f"{name}.json"
            contents = [sample_info[k][1]["sha256"] for k in keys]  # the same keys may hold reprocessed samples
            if done.exists() and (shard_dir / name).exists():
                marker = json.loads(done.read_text())
                if marker["keys"] == keys and marker.get("samples") == contents:
                    results[i] = marker["result"]
                    continue
            tars = sorted({str(self.video_dir / f"{sample_info[k][0]}.tar") for k in keys})
            results[i] = write.remote(str(shard_dir / name), keys, tars)
        pending = {ref: i for i, ref in results.items() if isinstance(ref, ray.ObjectRef)}
        for ref, i in pending.items():
            results[i] = ray.get(ref)
            shards.write_json_atomic(done_dir / f"{shards.SHARD_PATTERN.format(i)}.json",
                                     {"keys": plan[i], "result": results[i],
                                      "samples": [sample_info[k][1]["sha256"] for k in plan[i]]})
        for stale in shard_dir.glob("shard-*.tar*"):  # leftovers of an interrupted run with another plan
            if stale.name not in {shards.SHARD_PATTERN.format(i) for i in range(len(plan))}:
                stale.unlink()
        return self._write_index(records, plan, results, sample_info)

    def _write_index(self, records, plan, results, sample_info) -> dict:
        shard_rows, sample_rows = [], []
        for i, keys in enumerate(plan):
            name = shards.SHARD_PATTERN.format(i)
            infos = [sample_info[k][1] for k in keys]
            shard_rows.append({"name": name, "num_samples": len(keys), "num_frames": sum(s["num_frames"] for s in infos),
                               "seconds": round(sum(s["seconds"] for s in infos), 6), "bytes": results[i]["bytes"],
                               "sha256": results[i]["sha256"]})
            sample_rows += [{"key": s["key"], "shard": name, "num_frames": s["num_frames"], "seconds": s["seconds"],
                             "has_audio": s["has_audio"], "sha256": s["sha256"]} for s in infos]
        rejected = [r for rec in records for r in rec["rejected"]]
        with open(self.output / "rejected.jsonl.tmp", "w") as f:
            for r in rejected:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(self.output / "rejected.jsonl.tmp", self.output / "rejected.jsonl")
        totals = {"videos": len(records), "videos_with_samples": sum(1 for r in records if r["samples"]),
                  "samples": len(sample_rows), "rejected": len(rejected), "shards": len(plan),
                  "frames": sum(s["num_frames"] for s in sample_rows),
                  "hours": round(sum(s["seconds"] for s in sample_rows) / 3600, 6),
                  "source_hours": round(sum(r["duration_s"] for r in records) / 3600, 6),
                  "bytes": sum(s["bytes"] for s in shard_rows)}
        index = shards.build_index(index_config(self.cfg), shard_rows, sample_rows, totals)
        shards.write_json_atomic(self.output / "index.json", index)
        return index


def run(inputs: str, output: str | Path, cfg: PreprocessConfig, address: str | None = None) -> dict:
    """The whole job. Returns the index dict (also written to ``<output>/index.json``)."""
    import ray

    output = output_dir.prepare_output(output)
    with output_dir.OutputLock(output):  # one job per output folder
        sources = sorted(list_inputs(inputs), key=shards.video_id_for)
        if not sources:
            raise FileNotFoundError(f"--input {inputs!r}: no input files")
        output_dir.check_config(output, cfg)  # never mix samples of two configs
        print(f"[preprocess] {len(sources)} inputs -> {output} (workers={cfg.num_workers}, "
              f"backend={cfg.face_backend})", flush=True)
        job = Preprocessor(cfg, output)
        temp = init_ray(cfg, address)
        try:
            job.process_videos(sources)
            index = job.write_shards(sources)
        finally:
            ray.shutdown()
            if temp:
                shutil.rmtree(temp, ignore_errors=True)
    t = index["totals"]
    print(f"[preprocess] done: {t['samples']} samples in {t['shards']} shards ({t['hours']:.3f} h), "
          f"{t['rejected']} rejected -> {output / 'index.json'}", flush=True)
    return index
