"""Audio features: audio encoders and the alignment of their features to video frames.

Encoders load from LOCAL folders only (no hub access):

- ``wav2vec2`` (default, as the official pipeline): a transformers folder in the ``facebook/wav2vec2-base-960h``
  layout (``config.json``, weights, ``preprocessor_config.json``); features = ``last_hidden_state`` (~50 Hz).
- ``whisper`` (multilingual option): a transformers ``WhisperModel`` folder; features = the encoder's last
  hidden state (50 Hz over a 30 s padded window, cut to the clip's length).
- ``mel`` (the CPU preset): a log-mel spectrogram (torchaudio, 25 ms windows every 20 ms, so 50 Hz like
  Wav2Vec2) with ``mel_bins`` bands. It needs no weights, so the CPU demo learns from a real, fixed audio
  representation where no pretrained speech encoder can be downloaded.

Tests and the demo use :func:`save_tiny_wav2vec2`: a random-weight Wav2Vec2 saved with ``save_pretrained``, so
they exercise the same ``from_pretrained`` path real weights take.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
VECTORS_PER_FRAME = 2
# Long audio is encoded in chunks so memory does not grow with its length (one wav2vec2 forward's activations grow
# with it): CHUNK_SECONDS of output per forward, each seeing CONTEXT_SECONDS more on both sides.
CHUNK_SECONDS = 20.0
CONTEXT_SECONDS = 2.0
W2V_HOP = 320  # input samples per wav2vec2 vector (the conv front-end's total stride)


def rms_db(audio: np.ndarray) -> float:
    """Root-mean-square level in dBFS (-inf for digital silence)."""
    if audio.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def interpolate_audio_features(hidden, num_frames: int, vectors_per_frame: int = VECTORS_PER_FRAME):
    """(T, D) or (b, T, D) encoder features -> (vectors_per_frame*num_frames, D) or (b, ...): linear,
    ``align_corners=False``, in float32 (as the official code does), cast back to the input's dtype.

    Preprocessing (stored shard features) and inference both call this, so the two agree exactly. Output vector
    ``j`` sits at relative time ``(j + 0.5) / (vectors_per_frame * num_frames)`` of the clip.
    """
    import torch.nn.functional as F

    if hidden.ndim not in (2, 3):
        raise ValueError(f"audio features must be (T,D) or (b,T,D), got shape {tuple(hidden.shape)}")
    if num_frames < 1 or hidden.shape[-2] < 1:
        raise ValueError(f"need num_frames >= 1 and at least one audio vector, got {num_frames} and {hidden.shape[-2]}")
    batched = hidden if hidden.ndim == 3 else hidden.unsqueeze(0)
    resized = F.interpolate(batched.transpose(1, 2).float(), size=vectors_per_frame * num_frames, mode="linear",
                            align_corners=False).transpose(1, 2).to(hidden.dtype)
    return resized if hidden.ndim == 3 else resized[0]


class AudioEncoder:
    """Audio features from a local transformers folder. ``encode(audio_16k) -> (T, D)`` float32.

    Wav2Vec2 audio longer than ``chunk_seconds + 2 * context_seconds`` is encoded in overlapping chunks: each
    forward sees ``context_seconds`` before and after the ``chunk_seconds`` whose vectors it keeps, and the input is
    normalised with the whole track's mean and variance as the processor would. Peak memory is then that of one
    such window whatever the length; the vectors differ from a single whole-track forward only through attention
    beyond the context (tolerance in docs/preprocessing.md, test in tests/perception/test_audio.py).
    """

    def __init__(self, path: str | Path, kind: str = "wav2vec2", device: str = "cpu",
                 chunk_seconds: float = CHUNK_SECONDS, context_seconds: float = CONTEXT_SECONDS,
                 mel_bins: int = 32) -> None:
        import torch

        if kind == "mel":  # a fixed transform, frame by frame: no weights, no chunking needed
            self.kind, self.device, self.path = kind, torch.device(device), "log-mel"
            self.model = LogMel(mel_bins).to(self.device)
            self.dim = mel_bins
            return
        if chunk_seconds <= 0 or context_seconds < 0.05:
            raise ValueError(f"audio chunks: need chunk_seconds > 0 and context_seconds >= 0.05, got "
                             f"{chunk_seconds} and {context_seconds}")
        self.chunk = max(1, int(chunk_seconds * SAMPLE_RATE) // W2V_HOP) * W2V_HOP
        self.context = int(context_seconds * SAMPLE_RATE) // W2V_HOP * W2V_HOP
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a transformers model folder (config.json missing)")
        self.kind, self.device, self.path = kind, torch.device(device), str(path)
        if kind == "wav2vec2":
            from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

            self.model = Wav2Vec2Model.from_pretrained(path)
            self.extractor = (Wav2Vec2FeatureExtractor.from_pretrained(path)
                              if (path / "preprocessor_config.json").is_file()
                              else Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=SAMPLE_RATE))
        elif kind == "whisper":
            from transformers import WhisperFeatureExtractor, WhisperModel

            self.model = WhisperModel.from_pretrained(path).get_encoder()
            self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        else:
            raise ValueError(f"audio encoder kind must be wav2vec2|whisper|mel, got {kind!r}")
        self.model.eval().to(self.device)
        self.dim = int(self.model.config.hidden_size if kind == "wav2vec2" else self.model.config.d_model)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        import torch

        audio = np.asarray(audio, np.float32)
        with torch.inference_mode():
            if self.kind == "mel":
                return self.model(torch.from_numpy(audio).to(self.device)).cpu().numpy()
            if self.kind == "wav2vec2":
                return self._encode_wav2vec2(audio)
            return self._encode_whisper(audio)

    def _encode_wav2vec2(self, audio: np.ndarray) -> np.ndarray:
        import torch

        if self.extractor.do_normalize:  # zero mean / unit variance over the whole track, as the processor does
            audio = self.extractor.zero_mean_unit_var_norm([audio], attention_mask=None)[0].astype(np.float32)

        def forward(x: np.ndarray) -> np.ndarray:
            hidden = self.model(torch.from_numpy(np.ascontiguousarray(x))[None].to(self.device)).last_hidden_state
            return hidden[0].float().cpu().numpy()

        if len(audio) <= self.chunk + 2 * self.context:
            return forward(audio)
        total = int(self.model._get_feat_extract_output_lengths(len(audio)))
        pieces = []
        for start in range(0, len(audio), self.chunk):  # chunk starts are whole vectors: indices line up
            first, last = start // W2V_HOP, min((start + self.chunk) // W2V_HOP, total)
            if first >= last:
                break
            lo = max(0, start - self.context)
            hidden = forward(audio[lo:min(len(audio), start + self.chunk + self.context)])
            pieces.append(hidden[first - lo // W2V_HOP:last - lo // W2V_HOP])
        return np.concatenate(pieces)

    def _encode_whisper(self, audio: np.ndarray) -> np.ndarray:
        window = 30 * SAMPLE_RATE  # whisper's fixed input: 30 s -> 1500 vectors (50 Hz)
        pieces = []
        for start in range(0, max(len(audio), 1), window):
            chunk = audio[start:start + window]
            feats = self.extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            hidden = self.model(feats.to(self.device)).last_hidden_state[0]
            keep = max(1, int(np.ceil(len(chunk) / SAMPLE_RATE * 50)))
            pieces.append(hidden[:keep].float().cpu().numpy())
        return np.concatenate(pieces)

    def features_for_clip(self, audio: np.ndarray, num_frames: int) -> np.ndarray:
        """Encoder features of a clip's audio, interpolated to 2 vectors per video frame, float16."""
        import torch

        features = torch.from_numpy(np.ascontiguousarray(self.encode(audio), dtype=np.float32))
        return interpolate_audio_features(features, num_frames).numpy().astype(np.float16)


class LogMel:
    """``(samples,)`` 16 kHz audio -> ``(T, mel_bins)`` log-mel features at 50 Hz, scaled to about [-1, 1]."""

    def __init__(self, mel_bins: int) -> None:
        import torchaudio

        self.transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=400, win_length=400, hop_length=320, n_mels=mel_bins, power=2.0)

    def to(self, device) -> LogMel:
        self.transform = self.transform.to(device)
        return self

    def __call__(self, audio):
        import torch

        mel = self.transform(audio.float())  # (mel_bins, T)
        return ((torch.log10(mel + 1e-6) + 3.0) / 3.0).T.contiguous()


def build_tiny_wav2vec2(hidden_size: int = 32, seed: int = 0):
    """A 2-layer random Wav2Vec2 with the real conv front-end strides (320 samples per vector at 16 kHz)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(
        hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden_size,
        conv_dim=(hidden_size,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=32, do_stable_layer_norm=False, feat_extract_norm="group",
    )
    return Wav2Vec2Model(cfg).eval()


def save_tiny_wav2vec2(folder: str | Path, hidden_size: int = 32, seed: int = 0) -> Path:
    """Write a tiny random Wav2Vec2 + its feature extractor as a ``from_pretrained`` folder."""
    from transformers import Wav2Vec2FeatureExtractor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tiny_wav2vec2(hidden_size, seed).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


def save_tiny_whisper(folder: str | Path, d_model: int = 32, seed: int = 0) -> Path:
    """A tiny random WhisperModel + feature extractor folder (tests of the multilingual option)."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = WhisperConfig(d_model=d_model, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                        num_mel_bins=80, vocab_size=64, max_source_positions=1500, max_target_positions=32,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
