"""Masked autoencoder (He et al. 2021) with a ViT encoder.

    patches  = patchify(x)                               (B, N, p*p*C),   N = (H/p)(W/p)
    keep     = random 25% of the N positions per image  (mask ratio 0.75)
    latent   = Encoder(Embed(patches[keep]) + pos[keep])   the encoder never sees masked patches
    full     = unshuffle([latent, mask_token, ...]) + pos_dec
    pred     = Linear(Decoder(full))                     (B, N, p*p*C)
    loss     = mean over masked patches of ||pred - target||^2   (target optionally normalized per patch)

Transformer blocks are encoderkit.nn's pre-norm EncoderLayer. Pure torch: no I/O."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from encoderkit.nn.layers import EncoderLayer
from encoderkit.nn.positional import sinusoidal_table


@dataclass
class MAEConfig:
    """A small ViT-MAE; defaults suit 28x28 MNIST on a CPU."""

    image_size: int = 28  # H = W of the input images
    patch_size: int = 4  # p; image_size must be divisible by p
    in_chans: int = 1  # C
    d_model: int = 128  # encoder width
    depth: int = 4  # encoder layers
    n_heads: int = 4  # encoder attention heads
    mlp_ratio: float = 2.0  # d_ff = mlp_ratio * d_model (encoder and decoder)
    dec_d_model: int = 64  # decoder width (light)
    dec_depth: int = 2  # decoder layers
    dec_n_heads: int = 4  # decoder attention heads
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
    norm_pix_loss: bool = False  # normalize each target patch to zero mean, unit variance
    pool: str = "mean"  # features for probing: mean of patch tokens | cls | tokens (all patch tokens, flattened)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), patches in row-major order."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)  # (B, N, p*p*C)


def unpatchify(patches: torch.Tensor, p: int, c: int) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, H, W) for a square grid of N patches."""
    B, N, _ = patches.shape
    h = w = int(round(N ** 0.5))
    x = patches.reshape(B, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(B, c, h * p, w * p)


def random_masking(B: int, N: int, mask_ratio: float, device=None, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image random subset of positions to keep: (ids_keep (B, n_keep), mask (B, N) with 1 = masked,
    ids_restore (B, N) that undoes the shuffle)."""
    n_keep = max(1, int(round(N * (1 - mask_ratio))))
    noise = torch.rand(B, N, device=device, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first n_keep are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(B, N, device=device)
    mask[:, :n_keep] = 0
    return ids_shuffle[:, :n_keep], torch.gather(mask, 1, ids_restore), ids_restore


class MAE(nn.Module):
    """ViT encoder over visible patches + light Transformer decoder with mask tokens."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size={cfg.image_size} is not divisible by patch_size={cfg.patch_size}")
        if not 0 <= cfg.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {cfg.mask_ratio}")
        self.n_patches = (cfg.image_size // cfg.patch_size) ** 2
        patch_dim = cfg.patch_size ** 2 * cfg.in_chans
        # Encoder: patch embedding, [CLS], fixed sinusoidal positions, pre-norm blocks, final norm.
        self.patch_embed = nn.Linear(patch_dim, cfg.d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.register_buffer("pos", sinusoidal_table(self.n_patches + 1, cfg.d_model)[None], persistent=False)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.n_heads, int(cfg.mlp_ratio * cfg.d_model), norm_first=True, ln_eps=1e-6)
            for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-6)
        # Decoder: project, mask token, its own positions, a couple of blocks, pixel head.
        self.dec_embed = nn.Linear(cfg.d_model, cfg.dec_d_model)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_d_model))
        self.register_buffer("dec_pos", sinusoidal_table(self.n_patches + 1, cfg.dec_d_model)[None], persistent=False)
        self.dec_layers = nn.ModuleList(
            EncoderLayer(cfg.dec_d_model, cfg.dec_n_heads, int(cfg.mlp_ratio * cfg.dec_d_model), norm_first=True,
                         ln_eps=1e-6)
            for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(cfg.dec_d_model, eps=1e-6)
        self.dec_pred = nn.Linear(cfg.dec_d_model, patch_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch: float (B, C, H, W), or flat (B, C*H*W) which is reshaped."""
        cfg = self.config
        want = (cfg.in_chans, cfg.image_size, cfg.image_size)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected float images scaled to [0, 1], got {got}; convert with x.float() / 255")
        if tuple(x.shape[1:]) != want and tuple(x.shape[1:]) != (cfg.in_chans * cfg.image_size ** 2,):
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, want))}) or flat "
                             f"(B, {cfg.in_chans * cfg.image_size ** 2}), got {tuple(x.shape)}")

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return x.view(-1, cfg.in_chans, cfg.image_size, cfg.image_size) if x.dim() == 2 else x

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches: (latent (B, 1 + n_keep, d) with [CLS] first, mask (B, N), ids_restore)."""
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.patch_embed(patchify(self._images(x), self.config.patch_size)) + self.pos[:, 1:]  # (B, N, d)
        B, N, D = tokens.shape
        ids_keep, mask, ids_restore = random_masking(B, N, ratio, device=x.device)
        tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, D))  # (B, n_keep, d)
        cls = (self.cls_token + self.pos[:, :1]).expand(B, -1, -1)
        h = torch.cat([cls, tokens], dim=1)  # (B, 1 + n_keep, d)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Fill masked positions with the mask token, restore order, decode every patch: (B, N, p*p*C)."""
        h = self.dec_embed(latent)  # (B, 1 + n_keep, d_dec)
        B, n_vis, D = h.shape
        N = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(B, N - (n_vis - 1), -1)
        full = torch.cat([h[:, 1:], mask_tokens], dim=1)  # (B, N, d_dec), shuffled order
        full = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, D))  # (B, N, d_dec), image order
        h = torch.cat([h[:, :1], full], dim=1) + self.dec_pos  # (B, 1 + N, d_dec)
        for layer in self.dec_layers:
            h = layer(h)
        return self.dec_pred(self.dec_norm(h))[:, 1:]  # drop [CLS]: (B, N, p*p*C)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel targets per patch, normalized per patch when norm_pix_loss."""
        t = patchify(self._images(x), self.config.patch_size)
        if self.config.norm_pix_loss:
            mean, var = t.mean(-1, keepdim=True), t.var(-1, keepdim=True)
            t = (t - mean) / (var + 1e-6).sqrt()
        return t

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean squared error on the masked patches only."""
        latent, mask, ids_restore = self.forward_encoder(x)
        pred = self.forward_decoder(latent, ids_restore)
        per_patch = (pred - self.target(x)).pow(2).mean(-1)  # (B, N)
        loss = (per_patch * mask).sum() / mask.sum().clamp(min=1)
        return loss, {"masked_mse": float(loss.detach())}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of whole (unmasked) images for probing: mean of patch tokens or [CLS] (B, d_model), or
        every patch token in image order, flattened (B, N * d_model)."""
        latent, mask, ids_restore = self.forward_encoder(x, mask_ratio=0.0)
        if self.config.pool == "cls":
            return latent[:, 0]
        if self.config.pool == "tokens":
            tokens = torch.gather(latent[:, 1:], 1, ids_restore[..., None].expand(-1, -1, latent.shape[-1]))
            return tokens.flatten(1)  # (B, N * d_model), image order
        return latent[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images with masked patches predicted (visible ones kept), same shape as x; un-normalized targets only."""
        latent, mask, ids_restore = self.forward_encoder(x)
        pred = self.forward_decoder(latent, ids_restore)
        img = self._images(x)
        patches = patchify(img, self.config.patch_size)
        mixed = torch.where(mask[..., None].bool(), pred, patches)
        return unpatchify(mixed, self.config.patch_size, self.config.in_chans).view_as(x)
