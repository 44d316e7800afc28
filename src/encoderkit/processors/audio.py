"""Audio preprocessing: decode / validate waveforms, resample to the model's rate, then either Whisper's
log-Mel spectrogram (80 Mel bands, 25 ms Hann windows, 10 ms hop, 30 s chunks) or wav2vec 2.0's
zero-mean / unit-variance normalization.

Accepted inputs: a 1-D float array / tensor / list at the model's sampling rate, an (array, sampling_rate)
pair or {"array": ..., "sampling_rate": ...} dict (resampled with a polyphase filter when the rate differs),
or an audio file path (read with soundfile, resampled). Integer PCM is scaled to [-1, 1]. Multi-channel
audio, empty or non-finite waveforms, and text are errors that name the input's index."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(int(sr), int(target))
    return resample_poly(x, target // g, sr // g).astype(np.float32)


def load_audio(obj: Any, index: int = 0, sampling_rate: int = 16000) -> np.ndarray:
    """Any accepted audio input -> mono float32 waveform at `sampling_rate`; errors name the input index."""
    sr = sampling_rate
    if isinstance(obj, dict) and "array" in obj:
        obj, sr = obj["array"], int(obj.get("sampling_rate", sampling_rate))
    elif isinstance(obj, tuple) and len(obj) == 2 and np.isscalar(obj[1]):
        obj, sr = obj[0], int(obj[1])
    if isinstance(obj, (str, Path)):
        p = Path(obj)
        if not p.is_file():
            shown = str(obj) if len(str(obj)) < 80 else str(obj)[:77] + "..."
            raise ValueError(f"input {index} is a string that is not an audio file ({shown!r}); this encoder takes "
                             "waveforms (float arrays at the model's sampling rate) or audio file paths, not text")
        import soundfile

        try:
            data, sr = soundfile.read(str(p), dtype="float32", always_2d=True)  # (N, channels)
        except Exception as exc:  # soundfile raises its own error types for undecodable files
            raise ValueError(f"input {index}: cannot decode audio file {p}: {exc}") from None
        if data.shape[1] != 1:
            raise ValueError(f"input {index}: {p} has {data.shape[1]} channels; this model takes mono audio - "
                             "average the channels first (e.g. data.mean(axis=1))")
        x = data[:, 0]
    else:
        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().numpy()
        elif isinstance(obj, (list, tuple)):
            obj = np.asarray(obj)
        if not isinstance(obj, np.ndarray) or obj.dtype == object or not (
                np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
            raise TypeError(f"input {index} is a {type(obj).__name__}; expected a 1-D float waveform, "
                            "an (array, sampling_rate) pair or an audio file path")
        a = obj
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1:
            raise ValueError(f"input {index}: waveform of shape {a.shape} has several channels; this model takes mono "
                             "audio (1-D) - average the channels first (e.g. x.mean(axis=0))")
        if np.issubdtype(a.dtype, np.integer):  # PCM: scale to [-1, 1]
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
        x = a.astype(np.float32)
    if x.size == 0:
        raise ValueError(f"input {index} is an empty waveform; give at least a few milliseconds of audio")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"input {index}: waveform contains NaN or infinite samples")
    if sr != sampling_rate:
        log.info("input %d: resampling %d Hz -> %d Hz", index, sr, sampling_rate)
        x = _resample(x, sr, sampling_rate)
    return np.ascontiguousarray(x, dtype=np.float32)


def is_single_audio(inputs: Any) -> bool:
    """True when `inputs` is one waveform (array, (array, rate) pair, dict, path, or a list of numbers)
    rather than a list of them."""
    if isinstance(inputs, (str, Path, dict)):
        return True
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return inputs.ndim <= 1 or (inputs.ndim == 2 and 1 in inputs.shape)
    if isinstance(inputs, tuple) and len(inputs) == 2 and np.isscalar(inputs[1]) and not np.isscalar(inputs[0]):
        return True
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and all(isinstance(v, (int, float, np.number)) for v in inputs[:8])
    return True


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's Mel scale: linear below 1 kHz (3 / 200 Mel per Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    logf = 1000.0
    log_step = math.log(6.4) / 27.0
    return np.where(f >= logf, 15.0 + np.log(np.maximum(f, 1e-10) / logf) / log_step, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), 200.0 * m / 3.0)


def mel_filter_bank(n_freqs: int, n_mels: int, f_min: float, f_max: float, sampling_rate: int) -> np.ndarray:
    """(n_freqs, n_mels) triangular filters evenly spaced on the Slaney Mel scale, area-normalized (Slaney norm)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))  # (n_mels + 2,) in Hz
    fft_freqs = np.linspace(0, sampling_rate // 2, n_freqs)
    width = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))


@dataclass
class LogMelProcessor:
    """Whisper's feature extractor: pad / cut to chunk_length seconds, |STFT|^2 (Hann, n_fft, hop), Mel filters,
    log10, floor at (max - 8), then (x + 4) / 4. Items are (n_mels, frames) arrays."""
    feature_size: int = 80  # Mel bands
    sampling_rate: int = 16000
    hop_length: int = 160  # 10 ms
    chunk_length: int = 30  # seconds per input (longer audio is cut, shorter padded with silence)
    n_fft: int = 400  # 25 ms window
    modality: str = "audio"

    def __post_init__(self):
        self.n_samples = self.chunk_length * self.sampling_rate
        self.filters = torch.from_numpy(mel_filter_bank(1 + self.n_fft // 2, self.feature_size, 0.0, 8000.0,
                                                        self.sampling_rate)).float()

    @classmethod
    def from_folder(cls, folder: Path) -> "LogMelProcessor":
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        d = json.loads(path.read_text())
        return cls(feature_size=d.get("feature_size", 80), sampling_rate=d.get("sampling_rate", 16000),
                   hop_length=d.get("hop_length", 160), chunk_length=d.get("chunk_length", 30), n_fft=d.get("n_fft", 400))

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform at sampling_rate -> (feature_size, chunk frames) float32 log-Mel features."""
        x = np.zeros(self.n_samples, np.float32)
        n = min(len(wave), self.n_samples)
        x[:n] = wave[:n]
        spec = torch.stft(torch.from_numpy(x), self.n_fft, self.hop_length, window=torch.hann_window(self.n_fft),
                          return_complex=True)  # (n_fft/2 + 1, frames + 1), centered with reflect padding
        power = spec[:, :-1].abs() ** 2
        mel = self.filters.T @ power  # (n_mels, frames)
        logmel = torch.clamp(mel, min=1e-10).log10()
        logmel = torch.maximum(logmel, logmel.max() - 8.0)
        return ((logmel + 4.0) / 4.0).numpy()

    def prepare(self, inputs: list) -> list[tuple[np.ndarray, int]]:
        out = []
        for i, obj in enumerate(inputs):
            wave = load_audio(obj, i, self.sampling_rate)
            if len(wave) > self.n_samples:
                log.warning("input %d: %.1f s of audio cut to the model's %d s window", i, len(wave) / self.sampling_rate,
                            self.chunk_length)
            out.append((self(wave), min(len(wave), self.n_samples)))
        return out

    def is_single(self, inputs: Any) -> bool:
        return is_single_audio(inputs)

    def length(self, item: tuple[np.ndarray, int]) -> int:
        return item[1]

    def collate(self, items: list[tuple[np.ndarray, int]]) -> dict[str, torch.Tensor]:
        feats = torch.from_numpy(np.stack([f for f, _ in items]))  # (B, n_mels, frames)
        frames = feats.shape[-1]
        real = torch.tensor([max(1, math.ceil(n / self.hop_length)) for _, n in items])
        mask = (torch.arange(frames)[None, :] < real[:, None]).long()  # (B, frames): frames holding audio
        return {"input_features": feats, "attention_mask": mask}


@dataclass
class WaveformProcessor:
    """wav2vec 2.0 / HuBERT feature extractor: each waveform scaled to zero mean and unit variance
    (x - mean) / sqrt(var + 1e-7) when do_normalize, then zero-padded to the longest in the batch."""
    sampling_rate: int = 16000
    do_normalize: bool = True
    padding_value: float = 0.0
    modality: str = "audio"

    @classmethod
    def from_folder(cls, folder: Path) -> "WaveformProcessor":
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls()
        d = json.loads(path.read_text())
        return cls(sampling_rate=d.get("sampling_rate", 16000), do_normalize=d.get("do_normalize", True),
                   padding_value=d.get("padding_value", 0.0))

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        if not self.do_normalize:
            return wave.astype(np.float32)
        return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)

    def prepare(self, inputs: list) -> list[np.ndarray]:
        return [self(load_audio(obj, i, self.sampling_rate)) for i, obj in enumerate(inputs)]

    def is_single(self, inputs: Any) -> bool:
        return is_single_audio(inputs)

    def length(self, item: np.ndarray) -> int:
        return len(item)

    def collate(self, items: list[np.ndarray]) -> dict[str, torch.Tensor]:
        N = max(len(x) for x in items)
        values = np.full((len(items), N), self.padding_value, np.float32)
        mask = np.zeros((len(items), N), np.int64)
        for r, x in enumerate(items):
            values[r, :len(x)], mask[r, :len(x)] = x, 1
        return {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}
