"""Context windows over a long video and the overlap-averaging denoise step.

A video of ``F`` latent frames is denoised in windows of ``context_frames`` frames whose starts are
``0, ctx - overlap, 2 (ctx - overlap), ...`` (the official "uniform" scheduler at step 0, stride 1, not
closed-loop). Unlike the official code, which first cuts the video to a whole number of windows, the last
window is shifted left to end exactly at ``F`` so every frame of the requested length is covered.
Each frame's prediction is the mean over the windows that cover it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

StepFn = Callable[[torch.Tensor, list[int]], torch.Tensor]


def context_windows(num_frames: int, context_frames: int, overlap: int) -> list[list[int]]:
    """Frame indices of each window; together they cover ``range(num_frames)``."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if context_frames < 1 or not 0 <= overlap < context_frames:
        raise ValueError(f"need context_frames >= 1 and 0 <= overlap < context_frames, got {context_frames}/{overlap}")
    if num_frames <= context_frames:
        return [list(range(num_frames))]
    stride = context_frames - overlap
    starts = list(range(0, num_frames - context_frames + 1, stride))
    if starts[-1] + context_frames < num_frames:
        starts.append(num_frames - context_frames)  # shifted last window, ends at F
    return [list(range(s, s + context_frames)) for s in starts]


def num_denoiser_calls(num_frames: int, context_frames: int, overlap: int, steps: int) -> int:
    """Forward passes of the denoiser for a whole sampling run (CFG halves share one batched forward)."""
    return steps * len(context_windows(num_frames, context_frames, overlap))


def coverage(num_frames: int, windows: Sequence[Sequence[int]]) -> torch.Tensor:
    """How many windows cover each frame, shape ``(num_frames,)``."""
    count = torch.zeros(num_frames)
    for w in windows:
        count[list(w)] += 1
    if (count == 0).any():
        raise ValueError(f"windows leave frames {torch.nonzero(count == 0).flatten().tolist()} uncovered")
    return count


def _window_sum(latents: torch.Tensor, step_fn: StepFn, windows: Sequence[Sequence[int]], frame_dim: int,
                batch: int = 1) -> torch.Tensor:
    """Sum of the predictions of ``windows`` (fp32, on ``latents.device``). With ``batch`` > 1, windows of equal
    length go through ``step_fn`` ``batch`` at a time, stacked along dim 0, with one frame list per window."""
    total = torch.zeros(latents.shape, dtype=torch.float32, device=latents.device)
    groups = [list(windows[i:i + batch]) for i in range(0, len(windows), batch)] if batch > 1 else [[w] for w in windows]
    for group in groups:
        if len({len(w) for w in group}) > 1:  # a batch needs equal lengths; run the odd ones alone
            for w in group:
                total += _window_sum(latents, step_fn, [w], frame_dim)
            continue
        idx = [torch.as_tensor(list(w), device=latents.device) for w in group]
        x = torch.cat([latents.index_select(frame_dim, i) for i in idx])
        pred = step_fn(x, [list(w) for w in group] if batch > 1 else list(group[0]))
        for j, i in enumerate(idx):
            total.index_add_(frame_dim, i, pred[j:j + 1].to(device=latents.device, dtype=torch.float32))
    return total


def split_windows(windows: Sequence[Sequence[int]], parts: int) -> list[list[Sequence[int]]]:
    """Contiguous, nearly equal groups of windows (one group per device)."""
    parts = max(1, min(parts, len(windows)))
    size, extra = divmod(len(windows), parts)
    groups, start = [], 0
    for p in range(parts):
        end = start + size + (1 if p < extra else 0)
        groups.append(list(windows[start:end]))
        start = end
    return groups


def denoise_windows(
    latents: torch.Tensor,
    step_fn: StepFn | Sequence[StepFn],
    windows: Sequence[Sequence[int]],
    frame_dim: int = 2,
    batch: int = 1,
) -> torch.Tensor:
    """Run ``step_fn`` on each window of ``latents`` and average the overlapping predictions.

    ``step_fn(window_latents, frame_indices)`` returns a prediction shaped like its input. The result has
    the shape of ``latents``; frame ``i`` holds the mean of the predictions of the windows containing ``i``.
    A list of step functions (one per device, e.g. model replicas on several GPUs) splits the windows into
    contiguous groups run concurrently in threads; the result is the same as with one function.
    """
    count = coverage(latents.shape[frame_dim], windows).to(latents.device)
    fns = [step_fn] if callable(step_fn) else list(step_fn)
    if not fns:
        raise ValueError("denoise_windows needs at least one step function")
    groups = split_windows(windows, len(fns))
    if len(groups) == 1:
        total = _window_sum(latents, fns[0], groups[0], frame_dim, batch)
    else:
        from concurrent.futures import ThreadPoolExecutor

        # CUDA kernels release the GIL, so one thread per device overlaps the replicas' work.
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            parts = list(pool.map(lambda fg: _window_sum(latents, fg[0], fg[1], frame_dim, batch), zip(fns, groups)))
        total = torch.stack(parts).sum(0)
    shape = [1] * latents.ndim
    shape[frame_dim] = -1
    return (total / count.view(shape)).to(latents.dtype)
