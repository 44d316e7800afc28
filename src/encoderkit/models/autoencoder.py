"""The autoencoder family: plain, denoising, sparse, contractive, variational and stacked denoising,
each with an MLP and a convolutional variant.

    AE:   z = f(x),  x_hat = g(z),  L = ||x - x_hat||^2                     (or Bernoulli cross-entropy)
    DAE:  x~ = C(x) (Gaussian / masking / salt-and-pepper),  L = ||x - g(f(x~))||^2
    SAE:  L + lambda * sum_j |h_j|   or   L + lambda * sum_j KL(rho || rho_hat_j)
    CAE:  L + lambda * ||J_f(x)||_F^2,  J_f = d f(x) / d x
    VAE:  q(z|x) = N(mu, diag(sigma^2)),  z = mu + sigma * eps,  L = -E_q[log p(x|z)] + beta * KL(q || N(0, I))

Pure torch: no I/O. Inputs are (B, D) flat vectors for the MLP variant, (B, C, H, W) images for the conv one."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU, "elu": nn.ELU}


@dataclass
class AEConfig:
    """An autoencoder and its regularizer; one dataclass covers AE, DAE, SAE and CAE."""

    input_dim: int = 784  # D, flattened input size (MLP variant)
    hidden: tuple[int, ...] = (512, 256)  # encoder hidden widths; the decoder mirrors them
    latent: int = 30  # size of the code z
    activation: str = "relu"  # hidden activation: relu | sigmoid | tanh | gelu | elu
    code_activation: str = "linear"  # activation on z: linear | sigmoid (sigmoid codes suit the KL sparsity penalty)
    output: str = "sigmoid"  # decoder output: sigmoid (data in [0, 1]) | linear
    recon_loss: str = "mse"  # mse (mean over pixels) | bce (binary cross-entropy, data in [0, 1])
    conv: bool = False  # convolutional encoder/decoder for (C, H, W) images instead of an MLP
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) for the conv variant; H and W divisible by 4
    channels: tuple[int, int] = (32, 64)  # conv variant: channels after the two stride-2 convolutions
    corruption: str = "none"  # DAE input corruption: none | gaussian | mask | salt_pepper
    noise: float = 0.0  # gaussian: sigma; mask: drop probability; salt_pepper: fraction of pixels flipped
    sparsity: str = "none"  # SAE penalty on the code: none | l1 | kl
    sparsity_weight: float = 0.0  # lambda of the sparsity penalty
    rho: float = 0.05  # KL sparsity target mean activation
    contractive_weight: float = 0.0  # CAE lambda on ||J_f(x)||_F^2


def corrupt(x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The DAE's stochastic corruption C(x): additive Gaussian noise (sigma = level), masking noise (each
    input set to 0 with probability level) or salt-and-pepper (a fraction level set to min or max at random)."""
    if kind == "none" or level == 0:
        return x
    if kind == "gaussian":
        return x + level * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if kind == "mask":
        return x * (u >= level).to(x.dtype)
    if kind == "salt_pepper":
        flip = u < level
        salt = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) < 0.5
        lo, hi = x.min().detach(), x.max().detach()
        return torch.where(flip, torch.where(salt, hi, lo), x)
    raise ValueError(f"unknown corruption {kind!r}; choose none, gaussian, mask or salt_pepper")


def l1_penalty(h: torch.Tensor) -> torch.Tensor:
    """Sparsity by L1: mean over the batch of sum_j |h_j|."""
    return h.abs().sum(dim=1).mean()


def kl_sparsity_penalty(h: torch.Tensor, rho: float, eps: float = 1e-6) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j) with rho_hat_j the batch-mean activation of unit j (needs h in (0, 1))."""
    rho_hat = h.mean(dim=0).clamp(eps, 1 - eps)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def contractive_penalty(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Batch mean of ||J_f(x)||_F^2, the squared Frobenius norm of the encoder's Jacobian at each input.
    Exact (per-sample Jacobians via torch.func) and differentiable w.r.t. the encoder's parameters."""
    def f(xi: torch.Tensor) -> torch.Tensor:
        return encoder(xi.unsqueeze(0)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(f))(x)  # (B, latent, *input_shape)
    return jac.pow(2).flatten(1).sum(dim=1).mean()


def _mlp(dims: list[int], act: str, last_act: nn.Module | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(_ACTS[act]())
    if last_act is not None:
        layers.append(last_act)
    return nn.Sequential(*layers)


def _out_act(name: str) -> nn.Module | None:
    if name in ("linear", "none", "logits"):
        return None
    if name not in _ACTS:
        raise ValueError(f"unknown activation {name!r}; choose linear or one of {', '.join(_ACTS)}")
    return _ACTS[name]()


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> two stride-2 3x3 convolutions -> flatten -> Linear -> (B, out_dim)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int], out_dim: int, act: str):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"conv variant needs H and W divisible by 4, got image_shape={image_shape}")
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1), _ACTS[act](),  # (B, c1, H/2, W/2)
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), _ACTS[act](),  # (B, c2, H/4, W/4)
            nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, in_dim) -> Linear -> (B, c2, H/4, W/4) -> two stride-2 transposed convolutions -> (B, C, H, W)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int], in_dim: int, act: str,
                 out_act: nn.Module | None):
        super().__init__()
        c, h, w = image_shape
        c1, c2 = channels
        self.shape = (c2, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(in_dim, c2 * (h // 4) * (w // 4)), _ACTS[act]())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), _ACTS[act](),  # (B, c1, H/2, W/2)
            nn.ConvTranspose2d(c1, c, 3, stride=2, padding=1, output_padding=1),  # (B, C, H, W)
            *([out_act] if out_act is not None else []),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, *self.shape))


def _expected_shape(cfg) -> tuple[int, ...]:
    return tuple(cfg.image_shape) if cfg.conv else (cfg.input_dim,)


def check_input(x: torch.Tensor, cfg) -> None:
    """Raise a ValueError naming the problem when x is not a float batch of the configured shape."""
    want = _expected_shape(cfg)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor batch of shape (B, {', '.join(map(str, want))}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected float inputs (scaled to [0, 1]), got dtype {x.dtype}; convert with x.float() / 255")
    if tuple(x.shape[1:]) != want:
        hint = " (flatten images for the MLP variant)" if not cfg.conv and x.dim() > 2 else ""
        raise ValueError(f"expected inputs of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}{hint}")


class Autoencoder(nn.Module):
    """AE / DAE / SAE / CAE: encoder f, decoder g, and `loss(x)` = reconstruction + the configured penalty."""

    def __init__(self, config: AEConfig):
        super().__init__()
        self.config = cfg = config
        out_act = _out_act(cfg.output)
        code_act = _out_act(cfg.code_activation)
        if cfg.sparsity == "kl" and cfg.code_activation != "sigmoid":
            raise ValueError("the KL sparsity penalty needs code_activation='sigmoid' (activations in (0, 1))")
        if cfg.conv:
            enc = ConvEncoder(cfg.image_shape, cfg.channels, cfg.latent, cfg.activation)
            self.encoder = nn.Sequential(enc, code_act) if code_act is not None else enc
            self.decoder = ConvDecoder(cfg.image_shape, cfg.channels, cfg.latent, cfg.activation, out_act)
        else:
            dims = [cfg.input_dim, *cfg.hidden, cfg.latent]
            self.encoder = _mlp(dims, cfg.activation, code_act)
            self.decoder = _mlp(dims[::-1], cfg.activation, out_act)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch's shape and dtype (the Trainer calls this before the first step)."""
        check_input(x, self.config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = f(x), shape (B, latent)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat = g(z), shaped like the input."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of clean input (no corruption)."""
        return self.forward(x)

    def recon_error(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-sample reconstruction error: mean squared error or summed binary cross-entropy."""
        if self.config.recon_loss == "bce":
            return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="none").flatten(1).sum(1)
        return (x_hat - x).pow(2).flatten(1).mean(1)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction of x from C(x), plus the sparsity / contractive penalty; returns (loss, parts)."""
        cfg = self.config
        x_in = corrupt(x, cfg.corruption, cfg.noise) if self.training else x
        h = self.encode(x_in)
        rec = self.recon_error(self.decode(h), x).mean()
        total, parts = rec, {"recon": float(rec.detach())}
        if cfg.sparsity != "none" and cfg.sparsity_weight:
            pen = l1_penalty(h) if cfg.sparsity == "l1" else kl_sparsity_penalty(h, cfg.rho)
            total = total + cfg.sparsity_weight * pen
            parts["sparsity"] = float(pen.detach())
        if cfg.contractive_weight:
            pen = contractive_penalty(self.encoder, x_in)
            total = total + cfg.contractive_weight * pen
            parts["contractive"] = float(pen.detach())
        return total, parts


# ----------------------------------------------------------------------------------------- VAE
@dataclass
class VAEConfig:
    """A variational autoencoder with a diagonal Gaussian posterior and a standard normal prior."""

    input_dim: int = 784  # D, flattened input size (MLP variant)
    hidden: tuple[int, ...] = (512, 256)  # encoder hidden widths; the decoder mirrors them
    latent: int = 20  # size of z
    activation: str = "relu"  # hidden activation
    likelihood: str = "bernoulli"  # p(x|z): bernoulli (binary data) | gaussian (learned per-pixel variance)
    beta: float = 1.0  # weight of the KL term (beta-VAE)
    kl_warmup_steps: int = 0  # anneal the KL weight linearly from 0 to beta over this many training steps
    conv: bool = False  # convolutional encoder/decoder for (C, H, W) images
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) for the conv variant
    channels: tuple[int, int] = (32, 64)  # conv variant channels


LOG_2PI = math.log(2 * math.pi)


class VAE(nn.Module):
    """Encoder -> (mu, log sigma^2); z = mu + sigma * eps; decoder -> logits (Bernoulli) or mean (Gaussian)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"unknown likelihood {cfg.likelihood!r}; choose bernoulli or gaussian")
        if cfg.conv:
            self.encoder = ConvEncoder(cfg.image_shape, cfg.channels, 2 * cfg.latent, cfg.activation)
            self.decoder = ConvDecoder(cfg.image_shape, cfg.channels, cfg.latent, cfg.activation, None)
            n_out = math.prod(cfg.image_shape)
        else:
            dims = [cfg.input_dim, *cfg.hidden]
            self.encoder = nn.Sequential(_mlp(dims, cfg.activation, _ACTS[cfg.activation]()),
                                         nn.Linear(dims[-1], 2 * cfg.latent))
            self.decoder = _mlp([cfg.latent, *dims[::-1]], cfg.activation, None)
            n_out = cfg.input_dim
        # Gaussian likelihood: a learned log-variance per output dimension.
        self.log_var_x = nn.Parameter(torch.zeros(n_out)) if cfg.likelihood == "gaussian" else None
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen (KL warm-up)

    def init_output_bias(self, mean_x: torch.Tensor) -> None:
        """Start the decoder at the data mean: output bias = logit(mean pixel) (Bernoulli) or the mean (Gaussian)."""
        last = [m for m in self.decoder.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
        m = mean_x.detach().reshape(-1) if isinstance(last, nn.Linear) else mean_x.detach().reshape(
            self.config.image_shape[0], -1).mean(1)
        with torch.no_grad():
            last.bias.copy_(torch.logit(m.clamp(1e-3, 1 - 1e-3)) if self.config.likelihood == "bernoulli" else m)

    def kl_weight(self) -> float:
        """beta, ramped linearly over the first kl_warmup_steps training steps."""
        w = self.config.kl_warmup_steps
        return self.config.beta * (min(1.0, (int(self.steps) + 1) / w) if w else 1.0)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch's shape and dtype."""
        check_input(x, self.config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2), each (B, latent)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): a sample that gradients flow through."""
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits or Gaussian means of p(x|z), shaped like the input."""
        return self.decoder(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at z = mu (probabilities for Bernoulli)."""
        out = self.decode(self.encode(x)[0])
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def log_px_z(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per sample, summed over dimensions (nats)."""
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        lv = self.log_var_x.view_as(out[0])
        return (-0.5 * (LOG_2PI + lv + (x - out).pow(2) / lv.exp())).flatten(1).sum(1)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2), per sample."""
        return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log p(x|z) with one z ~ q(z|x), KL(q || p)), each per sample."""
        mu, logvar = self.encode(x)
        return -self.log_px_z(self.decode(self.reparameterize(mu, logvar)), x), self.kl(mu, logvar)

    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO per sample (beta = 1), in nats: an upper bound on -log p(x)."""
        rec, kl = self.elbo_terms(x)
        return rec + kl

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch mean of reconstruction + beta * KL; parts reported in nats per sample."""
        rec, kl = self.elbo_terms(x)
        loss = (rec + self.kl_weight() * kl).mean()
        if self.training:
            self.steps += 1
        return loss, {"recon": float(rec.mean().detach()), "kl": float(kl.mean().detach()),
                      "neg_elbo": float((rec + kl).mean().detach())}

    @torch.no_grad()
    def importance_sampled_nll(self, x: torch.Tensor, k: int = 500, chunk: int = 100) -> torch.Tensor:
        """-log p(x) ~= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al.), per sample."""
        mu, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn(n, *mu.shape, dtype=mu.dtype, device=mu.device)  # (n, B, latent)
            z = mu + std * eps
            out = self.decode(z.flatten(0, 1))  # (n*B, ...)
            log_px = self.log_px_z(out, x.repeat(n, *([1] * (x.dim() - 1)))).view(n, -1)  # (n, B)
            log_pz = (-0.5 * (LOG_2PI + z.pow(2))).sum(-1)
            log_qz = (-0.5 * (LOG_2PI + logvar + eps.pow(2))).sum(-1)
            log_w.append(log_px + log_pz - log_qz)
        log_w = torch.cat(log_w)  # (k, B)
        return -(torch.logsumexp(log_w, dim=0) - math.log(k))


# ------------------------------------------------------------------------------ stacked DAE
@dataclass
class StackedDAEConfig:
    """A deep encoder built one denoising layer at a time (Vincent et al. 2010)."""

    input_dim: int = 784  # D
    hidden: tuple[int, ...] = (512, 256, 30)  # widths of the stacked layers; the last is the code
    activation: str = "sigmoid"  # activation of every layer
    corruption: str = "mask"  # corruption used when pre-training each layer
    noise: float = 0.25  # corruption level
    output: str = "sigmoid"  # activation of the first layer's decoder (input reconstruction)


class StackedDAE(nn.Module):
    """Layers W_1..W_L trained greedily: layer l is a one-layer DAE on the (clean) codes of layers < l.
    `layer_loss(l, x)` is that DAE's loss; after pre-training the whole stack is an encoder/decoder pair."""

    def __init__(self, config: StackedDAEConfig):
        super().__init__()
        self.config = cfg = config
        dims = [cfg.input_dim, *cfg.hidden]
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(dims[i], dims[i + 1]), _ACTS[cfg.activation]())
                                    for i in range(len(dims) - 1))
        self.decoders = nn.ModuleList()
        for i in range(len(dims) - 1):
            act = _out_act(cfg.output) if i == 0 else _ACTS[cfg.activation]()
            self.decoders.append(nn.Sequential(nn.Linear(dims[i + 1], dims[i]), *([act] if act is not None else [])))
        self.stage = len(self.layers)  # which layer `loss` trains; len(layers) = the whole stack (fine-tuning)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch's shape and dtype."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or tuple(x.shape[1:]) != (self.config.input_dim,):
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected float inputs of shape (B, {self.config.input_dim}), got {got}")

    def encode(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Codes after the first `upto` layers (all by default)."""
        for layer in self.layers[: len(self.layers) if upto is None else upto]:
            x = layer(x)
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Map a top-level code back to input space through the decoders in reverse order."""
        for dec in reversed(self.decoders):
            z = dec(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Full-stack reconstruction."""
        return self.forward(x)

    def layer_loss(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Greedy stage `layer`: corrupt the (fixed) codes below it and reconstruct them through one layer."""
        with torch.no_grad():
            h = self.encode(x, upto=layer)
        h_tilde = corrupt(h, self.config.corruption, self.config.noise)
        return (self.decoders[layer](self.layers[layer](h_tilde)) - h).pow(2).flatten(1).mean(1).mean()

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the current stage: one layer's DAE, or (stage == L) the full stack's reconstruction."""
        if self.stage < len(self.layers):
            loss = self.layer_loss(self.stage, x)
        else:
            loss = (self.forward(x) - x).pow(2).flatten(1).mean(1).mean()
        return loss, {"stage": float(self.stage)}

    def stage_parameters(self, layer: int) -> list[nn.Parameter]:
        """The parameters trained in greedy stage `layer`."""
        return [*self.layers[layer].parameters(), *self.decoders[layer].parameters()]
