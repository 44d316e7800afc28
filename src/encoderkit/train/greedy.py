"""Greedy layer-wise pre-training of a stacked denoising autoencoder (Vincent et al. 2010), then
end-to-end fine-tuning of the whole stack: each stage is an ordinary Trainer run."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from encoderkit.models.autoencoder import StackedDAE
from encoderkit.train.trainer import Trainer, TrainConfig

log = logging.getLogger(__name__)


def greedy_pretrain(model: StackedDAE, train_data: Any, config: TrainConfig, pretrain_epochs: int | None = None,
                    finetune: bool = True, eval_data: Any = None) -> list[dict[str, Any]]:
    """Train layer 1 as a DAE on x, layer 2 as a DAE on layer 1's codes, ...; only that layer's weights
    move in each stage. Then (finetune) train the whole stack to reconstruct x. Returns all epoch records,
    each tagged with its stage."""
    history: list[dict[str, Any]] = []
    n = len(model.layers)
    stages = list(range(n)) + ([n] if finetune else [])
    for stage in stages:
        model.stage = stage
        trainable = set(map(id, model.stage_parameters(stage))) if stage < n else None
        for p in model.parameters():
            p.requires_grad_(trainable is None or id(p) in trainable)
        out = Path(config.out_dir) / f"stage{stage}" if config.out_dir else None
        epochs = pretrain_epochs if (stage < n and pretrain_epochs) else config.epochs
        cfg = dataclasses.replace(config, epochs=epochs, out_dir=str(out) if out else None, resume=None,
                                  early_stopping_patience=None)
        eval_fn = (lambda m, x: {"loss": m.loss(x)[0]}) if eval_data is not None else None
        trainer = Trainer(model, lambda m, b: m.loss(b), train_data, config=cfg, eval_data=eval_data, eval_fn=eval_fn)
        for rec in trainer.fit():
            history.append({"stage": stage, **rec})
        log.info("stacked DAE stage %d/%d done: loss %.5f", stage + 1, len(stages), history[-1]["train_loss"])
    for p in model.parameters():
        p.requires_grad_(True)
    model.stage = n
    return history
