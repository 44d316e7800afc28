"""Training objectives as pure-torch losses and input corruptions: MLM, ELECTRA RTD, T5 span
corruption, NSP, contrastive (InfoNCE, triplet, CLIP, SigLIP, NT-Xent), DINO self-distillation and retrieval training
(CoSENT, AnglE, Matryoshka, cached MNRL / GradCache, MarginMSE, KL distillation, GISTEmbed) and late interaction
(in-batch contrastive over ColBERT MaxSim scores)."""
from encoderkit.objectives.contrastive import (
    CLIPLoss,
    MultipleNegativesRankingLoss,
    NTXentLoss,
    SigLIPLoss,
    info_nce,
    nt_xent,
    triplet_loss,
)
from encoderkit.objectives.distill import (
    DINO,
    DINOHead,
    DINOLoss,
    cosine_schedule,
    ema_update,
    teacher_temperature_schedule,
)
from encoderkit.objectives.late_interaction import MaxSimContrastiveLoss, maxsim_contrastive_loss, maxsim_scores
from encoderkit.objectives.mlm import (
    IGNORE_INDEX,
    MaskedLanguageModel,
    MaskingConfig,
    MLMHead,
    init_bert_weights,
    mask_tokens,
    masked_accuracy,
    mlm_loss,
    special_tokens_mask,
    word_ids_from_continuation,
)
from encoderkit.objectives.nsp import NSPHead, SentencePair, make_nsp_pairs, nsp_loss
from encoderkit.objectives.retrieval import (
    AnglELoss,
    CachedMultipleNegativesRankingLoss,
    CoSENTLoss,
    GISTEmbedLoss,
    MatryoshkaLoss,
    cosent_loss,
    gist_loss,
    kl_distill_loss,
    margin_mse_loss,
    mnrl_loss,
    pairwise_angle,
)
from encoderkit.objectives.rtd import DiscriminatorHead, Electra, ElectraOutput, replace_with_samples, rtd_loss, share_embeddings
from encoderkit.objectives.span import SpanCorruptionConfig, random_spans_noise_mask, span_corrupt, span_corrupt_batch

__all__ = [
    "CLIPLoss", "MultipleNegativesRankingLoss", "NTXentLoss", "SigLIPLoss", "info_nce", "nt_xent", "triplet_loss",
    "DINO", "DINOHead", "DINOLoss", "cosine_schedule", "ema_update", "teacher_temperature_schedule",
    "MaxSimContrastiveLoss", "maxsim_contrastive_loss", "maxsim_scores",
    "IGNORE_INDEX", "MaskedLanguageModel", "MaskingConfig", "MLMHead", "init_bert_weights", "mask_tokens", "masked_accuracy", "mlm_loss",
    "special_tokens_mask", "word_ids_from_continuation",
    "NSPHead", "SentencePair", "make_nsp_pairs", "nsp_loss",
    "AnglELoss", "CachedMultipleNegativesRankingLoss", "CoSENTLoss", "GISTEmbedLoss", "MatryoshkaLoss", "cosent_loss",
    "gist_loss", "kl_distill_loss", "margin_mse_loss", "mnrl_loss", "pairwise_angle",
    "DiscriminatorHead", "Electra", "ElectraOutput", "replace_with_samples", "rtd_loss", "share_embeddings",
    "SpanCorruptionConfig", "random_spans_noise_mask", "span_corrupt", "span_corrupt_batch",
]
