"""The autoencoder family against direct re-computations of its formulas (small tensors, fast)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from encoderkit.models.autoencoder import (
    AEConfig,
    Autoencoder,
    StackedDAE,
    StackedDAEConfig,
    VAE,
    VAEConfig,
    contractive_penalty,
    corrupt,
    kl_sparsity_penalty,
    l1_penalty,
)


def test_corruptions_have_the_stated_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.full((200, 500), 0.5)
    noisy = corrupt(x, "gaussian", 0.3, g)
    assert abs(float((noisy - x).std()) - 0.3) < 0.01 and abs(float((noisy - x).mean())) < 0.01
    masked = corrupt(x, "mask", 0.25, g)
    assert set(masked.unique().tolist()) == {0.0, 0.5}
    assert abs(float((masked == 0).float().mean()) - 0.25) < 0.01
    x01 = torch.rand(200, 500, generator=g)
    sp = corrupt(x01, "salt_pepper", 0.2, g)
    changed = sp != x01
    assert abs(float(changed.float().mean()) - 0.2) < 0.01
    vals = sp[changed]
    assert torch.all((vals == x01.min()) | (vals == x01.max()))
    assert abs(float((vals == x01.max()).float().mean()) - 0.5) < 0.02  # salt and pepper equally likely
    assert corrupt(x, "none", 0.5) is x
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, "blur", 0.1)


def test_sparsity_penalties_match_their_formulas():
    h = torch.rand(16, 8) * 0.9 + 0.05
    assert torch.allclose(l1_penalty(h - 0.5), (h - 0.5).abs().sum() / 16)
    rho = 0.1
    rho_hat = h.mean(0)
    direct = sum(rho * math.log(rho / r) + (1 - rho) * math.log((1 - rho) / (1 - r)) for r in rho_hat.tolist())
    assert kl_sparsity_penalty(h, rho).item() == pytest.approx(direct, rel=1e-5)
    assert kl_sparsity_penalty(torch.full((4, 3), rho), rho).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("act,hidden", [("sigmoid", ()), ("relu", (12,)), ("tanh", (10, 7))])
def test_contractive_penalty_equals_autograd_jacobian(act, hidden):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(input_dim=9, hidden=hidden, latent=5, activation=act, code_activation="sigmoid"))
    x = torch.randn(6, 9)
    pen = contractive_penalty(ae.encoder, x)
    ref = torch.stack([jacobian(lambda v: ae.encoder(v[None])[0], xi).pow(2).sum() for xi in x]).mean()
    assert pen.item() == pytest.approx(ref.item(), rel=1e-5)
    if act == "sigmoid" and not hidden:  # the classic closed form: sum_j (h_j (1 - h_j))^2 sum_i W_ji^2
        W = ae.encoder[0].weight
        h = ae.encoder(x)
        closed = ((h * (1 - h)) ** 2 @ W.pow(2).sum(1)).mean()
        assert pen.item() == pytest.approx(closed.item(), rel=1e-5)
    pen.backward()  # differentiable w.r.t. the encoder's weights
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.encoder.parameters())


def test_cae_loss_adds_weighted_penalty():
    torch.manual_seed(0)
    cfg = AEConfig(input_dim=6, hidden=(5,), latent=3, contractive_weight=0.5)
    ae = Autoencoder(cfg).eval()  # eval: no corruption, deterministic
    x = torch.rand(4, 6)
    loss, parts = ae.loss(x)
    rec = (ae(x) - x).pow(2).mean()
    assert loss.item() == pytest.approx(rec.item() + 0.5 * contractive_penalty(ae.encoder, x).item(), rel=1e-5)
    assert parts["recon"] == pytest.approx(rec.item(), rel=1e-5)


def test_dae_trains_on_corrupted_but_scores_against_clean_input():
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(input_dim=10, hidden=(8,), latent=4, corruption="mask", noise=0.5))
    x = torch.rand(32, 10)
    ae.train()
    torch.manual_seed(1)
    loss, _ = ae.loss(x)
    torch.manual_seed(1)
    x_tilde = corrupt(x, "mask", 0.5)
    assert loss.item() == pytest.approx((ae(x_tilde) - x).pow(2).mean().item(), rel=1e-6)


def test_sparse_kl_requires_sigmoid_codes():
    with pytest.raises(ValueError, match="sigmoid"):
        Autoencoder(AEConfig(sparsity="kl", sparsity_weight=1.0))
    ae = Autoencoder(AEConfig(input_dim=8, hidden=(6,), latent=4, sparsity="kl", sparsity_weight=1.0,
                              code_activation="sigmoid"))
    loss, parts = ae.loss(torch.rand(5, 8))
    assert "sparsity" in parts and loss.item() > parts["recon"]


@pytest.mark.parametrize("conv", [False, True])
def test_shapes_and_input_checks(conv):
    ae = Autoencoder(AEConfig(latent=7, conv=conv, channels=(4, 8), hidden=(32,)))
    x = torch.rand(3, 1, 28, 28) if conv else torch.rand(3, 784)
    assert ae.encode(x).shape == (3, 7)
    assert ae(x).shape == x.shape
    ae.check_input(x)
    with pytest.raises(ValueError, match="float"):
        ae.check_input((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        ae.check_input(torch.rand(3, 28, 28) if not conv else torch.rand(3, 784))
    vae = VAE(VAEConfig(latent=5, conv=conv, channels=(4, 8), hidden=(32,)))
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert vae.reconstruct(x).shape == x.shape


def test_vae_terms_match_torch_distributions():
    torch.manual_seed(0)
    for likelihood in ("bernoulli", "gaussian"):
        vae = VAE(VAEConfig(input_dim=12, hidden=(10,), latent=3, likelihood=likelihood))
        with torch.no_grad():
            if vae.log_var_x is not None:
                vae.log_var_x.uniform_(-1, 1)
        x = torch.bernoulli(torch.full((5, 12), 0.3))
        mu, logvar = vae.encode(x)
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        kl_ref = torch.distributions.kl_divergence(q, p).sum(1)
        assert torch.allclose(vae.kl(mu, logvar), kl_ref, atol=1e-5)
        out = vae.decode(mu)
        if likelihood == "bernoulli":
            ref = torch.distributions.Bernoulli(logits=out).log_prob(x).sum(1)
        else:
            ref = torch.distributions.Normal(out, (0.5 * vae.log_var_x).exp()).log_prob(x).sum(1)
        assert torch.allclose(vae.log_px_z(out, x), ref, atol=1e-4)


def test_reparameterization_is_a_differentiable_sample():
    mu = torch.full((20000, 1), 1.5, requires_grad=True)
    logvar = torch.full((20000, 1), math.log(0.25), requires_grad=True)
    torch.manual_seed(0)
    z = VAE.reparameterize(mu, logvar)
    assert abs(z.mean().item() - 1.5) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.ones_like(mu))  # dz/dmu = 1
    assert logvar.grad.abs().sum() > 0


def test_importance_sampled_nll_matches_numerical_integration():
    """1-D latent: log p(x) = log integral p(x|z) N(z; 0, 1) dz, computed on a fine grid."""
    torch.manual_seed(0)
    vae = VAE(VAEConfig(input_dim=4, hidden=(8,), latent=1))
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    z = torch.linspace(-8, 8, 8001)[:, None]
    with torch.no_grad():
        out = vae.decode(z)
        ref = []
        for xi in x:
            log_joint = vae.log_px_z(out, xi.expand(len(z), -1)) - 0.5 * (math.log(2 * math.pi) + z[:, 0] ** 2)
            ref.append(-(torch.logsumexp(log_joint, 0) + math.log(16 / 8000)))
        ref = torch.stack(ref)
        torch.manual_seed(1)
        est = vae.importance_sampled_nll(x, k=4000, chunk=1000)
        torch.manual_seed(1)
        elbo = torch.stack([vae.negative_elbo(x) for _ in range(2000)]).mean(0)
    assert torch.allclose(est, ref, atol=0.02), (est, ref)
    assert torch.all(elbo >= ref - 0.02)  # the ELBO bounds log p(x) from below: -ELBO >= NLL


def test_stacked_dae_layer_stage_leaves_lower_layers_alone():
    torch.manual_seed(0)
    sdae = StackedDAE(StackedDAEConfig(input_dim=10, hidden=(8, 6, 3), noise=0.2))
    x = torch.rand(16, 10)
    sdae.layer_loss(1, x).backward()
    assert all(p.grad is None for p in sdae.layers[0].parameters())  # codes below are inputs, not trained
    assert all(p.grad is not None for p in sdae.layers[1].parameters())
    assert all(p.grad is None for p in sdae.layers[2].parameters())
    assert sdae.encode(x).shape == (16, 3) and sdae(x).shape == (16, 10)


def test_greedy_pretraining_trains_each_layer_in_turn(tmp_path):
    from encoderkit.train import TrainConfig
    from encoderkit.train.greedy import greedy_pretrain

    torch.manual_seed(0)
    x = torch.rand(256, 20)
    sdae = StackedDAE(StackedDAEConfig(input_dim=20, hidden=(16, 8), noise=0.1))
    init = {k: v.clone() for k, v in sdae.state_dict().items()}
    before = (sdae(x) - x).pow(2).mean().item()
    hist = greedy_pretrain(sdae, x, TrainConfig(epochs=5, batch_size=32, lr=1e-2, progress=False,
                                                out_dir=str(tmp_path)), pretrain_epochs=3)
    assert [h["stage"] for h in hist] == [0] * 3 + [1] * 3 + [2] * 5
    assert all(not torch.equal(init[k], v) for k, v in sdae.state_dict().items())
    assert (sdae(x) - x).pow(2).mean().item() < before
    assert all(p.requires_grad for p in sdae.parameters())
