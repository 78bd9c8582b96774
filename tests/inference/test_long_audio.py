"""Inference encodes long audio in bounded chunks too (the pipeline's encoder is preprocessing's AudioEncoder)."""

from __future__ import annotations


def test_pipeline_audio_encoding_memory_does_not_grow_with_the_audio(tiny_pipeline, speech_like_audio):
    from perception.audio import CHUNK_SECONDS, CONTEXT_SECONDS

    lengths: list[int] = []
    hook = tiny_pipeline.audio_encoder.model.register_forward_pre_hook(
        lambda _m, args: lengths.append(int(args[0].shape[-1])))
    try:
        tokens = tiny_pipeline.encode_audio(speech_like_audio(60.0), num_frames=1500)
    finally:
        hook.remove()
    assert tokens.shape[:2] == (1, 1500)
    assert len(lengths) == 3 and max(lengths) <= (CHUNK_SECONDS + 2 * CONTEXT_SECONDS) * 16000
