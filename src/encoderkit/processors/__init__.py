"""Preprocessing for non-text inputs: images (resize, crop, rescale, normalize) and audio (resampling,
log-Mel features, waveform normalization), each matching its reference processor in `transformers`.
A processor has .modality, .prepare(inputs) -> items, .length(item) and .collate(items) -> model kwargs."""
from encoderkit.processors.audio import LogMelProcessor, WaveformProcessor, load_audio, mel_filter_bank
from encoderkit.processors.image import ImageProcessor, load_image

__all__ = ["ImageProcessor", "load_image", "LogMelProcessor", "WaveformProcessor", "load_audio", "mel_filter_bank"]
