"""Zero-shot classification: embed the label texts, embed the inputs, pick the label whose vector is most
similar. With an image-text model (CLIP, SigLIP) the inputs are images and the scores are the model's own
logits (softmax for CLIP, sigmoid for SigLIP); with a text encoder the inputs are texts, scored by cosine."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class ZeroShotResult:
    labels: list[str]  # the candidate labels, in the order of the score columns
    scores: np.ndarray  # (n_inputs, n_labels) probabilities (softmax / sigmoid) per input
    similarity: np.ndarray  # (n_inputs, n_labels) cosine similarities

    @property
    def predictions(self) -> list[str]:
        return [self.labels[i] for i in self.scores.argmax(1)]

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k best (label, score) pairs per input."""
        order = np.argsort(-self.scores, axis=1)[:, :k]
        return [[(self.labels[j], float(self.scores[r, j])) for j in row] for r, row in enumerate(order)]


class ZeroShotClassifier:
    """Inputs encoded by `input_encoder`, labels by `label_encoder` (the same one for text-only models).
    logits = scale * cos + bias; probabilities by softmax over labels, or sigmoid per label (SigLIP)."""

    def __init__(self, input_encoder: Any, label_encoder: Any | None = None, *, scale: float = 100.0, bias: float = 0.0,
                 activation: str = "softmax", template: str = "{}"):
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        if "{}" not in template:
            raise ValueError(f"template must contain '{{}}' where the label goes, got {template!r}")
        self.input_encoder = input_encoder
        self.label_encoder = label_encoder or input_encoder
        self.scale, self.bias, self.activation, self.template = float(scale), float(bias), activation, template

    @classmethod
    def from_pretrained(cls, path: str | Path, template: str = "{}", **load_opts: Any) -> "ZeroShotClassifier":
        """A CLIP / SigLIP folder (images vs label texts, the model's own logit scale and bias) or any text encoder."""
        import encoderkit
        from encoderkit.models.clip import Tower

        text = encoderkit.load(path, **load_opts)
        fam = text.family
        if fam is None or not fam.towers:
            return cls(text, text, scale=20.0, template=template)  # cosine / 0.05, a usual contrastive temperature
        dual = text.model.full_model
        image = encoderkit.load(path, modality="image", **load_opts)
        image.model = Tower(dual, "image").eval()  # share one set of weights between the two encoders
        siglip = dual.logit_bias is not None
        scale, bias = float(dual.logit_scale.detach().exp()), float(dual.logit_bias.detach()) if siglip else 0.0
        return cls(image, text, scale=scale, bias=bias,
                   activation="sigmoid" if siglip else "softmax", template=template)

    def __call__(self, inputs: Sequence[Any], labels: Sequence[str], batch_size: int = 32,
                 progress: bool | None = None) -> ZeroShotResult:
        labels = [str(x) for x in labels]
        if len(labels) < 2 and self.activation == "softmax":
            raise ValueError(f"give at least two labels to choose between, got {labels}")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        x = np.atleast_2d(self.input_encoder.encode(list(inputs), batch_size=batch_size, normalize=True, progress=progress))
        t = self.label_encoder.encode([self.template.format(lab) for lab in labels], normalize=True)
        sim = x @ t.T  # (n, L)
        logits = self.scale * sim + self.bias
        if self.activation == "softmax":
            e = np.exp(logits - logits.max(1, keepdims=True))
            probs = e / e.sum(1, keepdims=True)
        else:
            probs = 1.0 / (1.0 + np.exp(-logits))
        return ZeroShotResult(labels, probs.astype(np.float32), sim.astype(np.float32))


def zero_shot(inputs: Sequence[Any], labels: Sequence[str], model: str | Path | ZeroShotClassifier,
              template: str = "{}", batch_size: int = 32) -> ZeroShotResult:
    """Classify `inputs` among `labels` with a model folder / name (or a ready ZeroShotClassifier)."""
    clf = model if isinstance(model, ZeroShotClassifier) else ZeroShotClassifier.from_pretrained(model, template=template)
    return clf(inputs, labels, batch_size=batch_size)
