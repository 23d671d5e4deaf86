"""common/gans.py against Handout A Problems 3–4: the networks, every loss against its formula, the gradient
penalty against closed forms and a per-sample loop, weight clipping, and gan_step for each recipe."""
import argparse
import copy
import csv

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import synthetic_mnist
from common.gans import (Discriminator, Generator, build_gan, clip_weights_, d_loss_bce, full_batches, g_loss_minimax,
                         g_loss_nonsaturating, gan_config, gan_step, generate, gradient_penalty, wgan_critic_loss,
                         wgan_generator_loss, write_losses_csv)

CPU = torch.device("cpu")


def count(model, *types):
    return sum(isinstance(m, types) for m in model.modules())


def flags(**kw):
    """The flags gan_config reads, with tiny widths."""
    base = dict(lr=None, n_critic=5, dropout=0.3, z_dim=16, hidden=8, small=False, g_loss="nonsaturating",
                clip=0.01, gp_lambda=10.0, critic_norm="layer", label_inject="channels")
    return argparse.Namespace(**dict(base, **kw))


# --- the networks: Handout A 3(a), its footnote, 4(a), 4(b) ---

@pytest.mark.parametrize("small, n_convs", [(False, 3), (True, 1)])
def test_generator_is_one_dense_then_conv_layers(small, n_convs):
    G = Generator(z_dim=100, hidden=16, small=small)
    x = G(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert count(G, nn.Linear) == 1 and count(G, nn.ConvTranspose2d, nn.Conv2d) == n_convs
    assert G.dense[0].out_features == 16 * 7 * 7                       # hidden: the channels of G's 7×7 map


@pytest.mark.parametrize("small, n_convs", [(False, 3), (True, 1)])
def test_discriminator_is_conv_layers_then_one_dense(small, n_convs):
    D = Discriminator(hidden=16, small=small)
    assert D(torch.randn(5, 1, 28, 28)).shape == (5,)
    assert count(D, nn.Conv2d) == n_convs and count(D, nn.Linear) == 1
    assert [m for m in D.modules() if isinstance(m, nn.Conv2d)][-1].out_channels == 16   # hidden: D's last conv
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in D.modules())          # Handout A 3(a): dropout


@pytest.mark.parametrize("norm, layer", [("layer", nn.GroupNorm), ("instance", nn.InstanceNorm2d)])
def test_wgangp_critic_has_no_batchnorm_and_no_dropout(norm, layer):
    D = build_gan(gan_config("wgangp", flags(critic_norm=norm)), CPU).D
    assert count(D, nn.BatchNorm1d, nn.BatchNorm2d) == 0 and count(D, layer) == 2
    assert all(m.p == 0 for m in D.modules() if isinstance(m, nn.Dropout))
    none = build_gan(gan_config("wgangp", flags(critic_norm="none")), CPU).D
    assert count(none, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d) == 0


def test_conditional_generator_output_depends_on_label():
    torch.manual_seed(0)
    G = Generator(z_dim=16, hidden=8, conditional=True).eval()
    assert G.dense[0].in_features == 16 + 10                             # Handout A 4(a): [z, one-hot y]
    z = torch.randn(4, 16)
    x0, x1 = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4, dtype=torch.long))
    assert x0.shape == (4, 1, 28, 28) and (x0 - x1).abs().max() > 1e-3


@pytest.mark.parametrize("inject", ["channels", "dense"])
def test_conditional_discriminator_uses_label(inject):
    D = Discriminator(hidden=8, conditional=True, label_inject=inject, dropout=0.0).eval()
    assert D.convs[0].in_channels == (11 if inject == "channels" else 1)
    assert D.dense.in_features == 8 * 4 * 4 + (10 if inject == "dense" else 0)
    x = torch.randn(3, 1, 28, 28)
    assert (D(x, torch.zeros(3, dtype=torch.long)) - D(x, torch.full((3,), 9))).abs().max() > 1e-6


def test_recipes_follow_the_handouts():
    dcgan, wgan, gp = (build_gan(gan_config(k, flags()), CPU) for k in ("dcgan", "wgan", "wgangp"))
    assert isinstance(dcgan.opt_D, torch.optim.Adam) and dcgan.opt_D.defaults["betas"] == (0.5, 0.999)
    assert dcgan.cfg["lr"] == 2e-4 and dcgan.cfg["n_critic"] == 1 and dcgan.cfg["dropout"] == 0.3
    assert isinstance(wgan.opt_D, torch.optim.RMSprop) and isinstance(wgan.opt_G, torch.optim.RMSprop)
    assert wgan.cfg["lr"] == 5e-5 and wgan.cfg["n_critic"] == 5
    assert isinstance(gp.opt_D, torch.optim.Adam) and gp.opt_D.defaults["betas"] == (0.5, 0.9)
    assert gp.cfg["lr"] == 1e-4 and gp.cfg["gp_lambda"] == 10.0 and gp.cfg["dropout"] == 0.0
    assert gan_config("wgan", flags(lr=1e-3))["lr"] == 1e-3                        # --lr overrides the recipe
    assert gan_config("cgan", argparse.Namespace())["hidden"] == 128              # missing flags: the defaults


def test_generate_runs_G_in_eval_mode_in_batches_and_restores_its_mode():
    torch.manual_seed(0)
    G = Generator(z_dim=16, hidden=8, conditional=True)
    z, y = torch.randn(7, 16), torch.arange(7)
    x = generate(G, z, y, batch=3)
    assert G.training                                                      # left as it was found
    assert torch.allclose(x, G.eval()(z, y), atol=1e-6)                    # BatchNorm's running statistics


# --- the losses against their formulas ---

L_REAL, L_FAKE = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 1.5])


def test_bce_losses_match_their_formulas():
    sig = torch.sigmoid
    expected = -torch.log(sig(L_REAL)).mean() - torch.log(1 - sig(L_FAKE)).mean()
    assert torch.allclose(d_loss_bce(L_REAL, L_FAKE), expected)
    torch_bce = (F.binary_cross_entropy_with_logits(L_REAL, torch.ones(3))
                 + F.binary_cross_entropy_with_logits(L_FAKE, torch.zeros(3)))
    assert torch.allclose(d_loss_bce(L_REAL, L_FAKE), torch_bce)
    assert torch.allclose(g_loss_minimax(L_FAKE), torch.log(1 - sig(L_FAKE)).mean())
    assert torch.allclose(g_loss_nonsaturating(L_FAKE), -torch.log(sig(L_FAKE)).mean())


def test_minimax_saturates_where_nonsaturating_does_not():
    """When D confidently rejects a fake (logit −10), minimax G's gradient vanishes; non-saturating's is ≈ −1."""
    grads = []
    for loss in (g_loss_minimax, g_loss_nonsaturating):
        logit = torch.tensor([-10.0], requires_grad=True)
        loss(logit).backward()
        grads.append(logit.grad.item())
    assert abs(grads[0]) < 1e-4 and grads[1] == pytest.approx(-1.0, abs=1e-4)


def test_wasserstein_losses_match_their_formulas():
    assert wgan_critic_loss(L_REAL, L_FAKE).item() == pytest.approx((L_FAKE.mean() - L_REAL.mean()).item())
    assert wgan_generator_loss(L_FAKE).item() == pytest.approx(-L_FAKE.mean().item())


# --- weight clipping and the gradient penalty ---

def test_clipping_clamps_both_signs_and_leaves_weights_inside_alone():
    """Handout A 3(b): p.clamp_(−c, c): large weights of either sign go to ±c, the rest are untouched."""
    D = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        D.weight.copy_(torch.tensor([[-1.0, -0.005, 0.003, 2.0]]))
    clip_weights_(D, 0.01)
    assert torch.equal(D.weight, torch.tensor([[-0.01, -0.005, 0.003, 0.01]]))


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b, so ∇_x D = w at every x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 28, 28) * 0.05)
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, y=None):
        return (x * self.w).sum((1, 2, 3)) + self.b


def test_gradient_penalty_closed_form_for_a_linear_critic():
    torch.manual_seed(0)
    D = LinearCritic()
    penalty = gradient_penalty(D, torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28), lam=10.0)
    w_norm = D.w.detach().norm()
    assert penalty.item() == pytest.approx(10 * (w_norm.item() - 1) ** 2, rel=1e-5)
    penalty.backward()   # differentiable in the critic: d/dw λ(‖w‖ − 1)² = 2λ(‖w‖ − 1) w / ‖w‖
    assert torch.allclose(D.w.grad, 20 * (w_norm - 1) * D.w.detach() / w_norm, atol=1e-5)


def half_squared_norm(x, y=None):
    """A critic with D(x) = ½‖x‖², so ∇D(x) = x."""
    return 0.5 * x.pow(2).sum((1, 2, 3))


def test_gradient_penalty_uses_one_norm_per_sample():
    torch.manual_seed(0)
    x_real, x_fake, eps = torch.randn(5, 1, 28, 28), torch.randn(5, 1, 28, 28) * 0.1, torch.rand(5, 1, 1, 1)
    x_hat = eps * x_real + (1 - eps) * x_fake
    expected = 10 * ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gradient_penalty(half_squared_norm, x_real, x_fake, eps=eps).item() == pytest.approx(expected.item(),
                                                                                                 rel=1e-5)
    assert abs(expected - 10 * (x_hat.norm() - 1) ** 2) > 1        # not the norm of the whole batch's gradient


def test_gradient_penalty_matches_a_per_sample_loop_on_the_real_critic():
    torch.manual_seed(0)
    D = Discriminator(hidden=8, norm="layer", dropout=0.0)
    x_real, x_fake, eps = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.rand(4, 1, 1, 1)
    terms = []
    for i in range(4):
        x_hat = (eps[i] * x_real[i:i + 1] + (1 - eps[i]) * x_fake[i:i + 1]).requires_grad_(True)
        grad, = torch.autograd.grad(D(x_hat).sum(), x_hat)
        terms.append((grad.norm() - 1) ** 2)
    expected = 10 * torch.stack(terms).mean()
    assert gradient_penalty(D, x_real, x_fake, eps=eps).item() == pytest.approx(expected.item(), rel=1e-4)


class RecordingCritic:
    """D(x) = Σ x, keeping a copy of the x̂ it was given."""

    def __call__(self, x, y=None):
        self.x_hat = x.detach().clone()
        return x.sum((1, 2, 3))


def test_gradient_penalty_draws_one_epsilon_per_sample_between_real_and_fake():
    """Handout A 4(b): x̂ = ε x + (1 − ε) x̃, ε ~ U[0, 1] per sample. With x = 1 and x̃ = 0, x̂_i is the image ε_i."""
    critic = RecordingCritic()
    torch.manual_seed(0)
    gradient_penalty(critic, torch.ones(8, 1, 28, 28), torch.zeros(8, 1, 28, 28))
    per_sample = critic.x_hat.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))   # one ε for all pixels of a sample
    eps = per_sample[:, 0]
    assert eps.min() >= 0 and eps.max() <= 1 and len(eps.unique()) == 8        # another ε for each sample


# --- gan_step: each recipe's D and G objective, clipping, the G step only when asked ---

@pytest.mark.parametrize("kind, g_loss", [("dcgan", "nonsaturating"), ("dcgan", "minimax"), ("cgan", "nonsaturating"),
                                          ("wgan", "nonsaturating"), ("wgangp", "nonsaturating")])
def test_gan_step_optimises_the_handouts_objectives(kind, g_loss):
    """Replays gan_step's random draws (z, then the GP's ε) on copies of G and D taken before the step: the D
    loss is the recipe's formula with the old D, the G loss the formula with the updated D on the same fakes."""
    torch.manual_seed(0)
    gan = build_gan(gan_config(kind, flags(dropout=0.0, g_loss=g_loss, lr=1e-2)), CPU)
    x_real, y = synthetic_mnist(16)
    G0, D0 = copy.deepcopy(gan.G), copy.deepcopy(gan.D)
    torch.manual_seed(1)
    d_loss, g_loss_value = gan_step(gan, x_real, y, g_step=True)
    torch.manual_seed(1)
    y = y if kind == "cgan" else None
    x_fake = G0(torch.randn(16, 16), y).detach()
    d_real, d_fake, sig = D0(x_real, y), D0(x_fake, y), torch.sigmoid
    if kind in ("dcgan", "cgan"):                 # maximise log D(x) + log(1 − D(G(z)))
        expected_d = -torch.log(sig(d_real)).mean() - torch.log(1 - sig(d_fake)).mean()
    else:                                         # maximise D(x) − D(G(z)) [− λ E(‖∇D(x̂)‖ − 1)²]
        expected_d = d_fake.mean() - d_real.mean()
    if kind == "wgangp":
        eps = torch.rand(16, 1, 1, 1)
        x_hat = (eps * x_real + (1 - eps) * x_fake).requires_grad_(True)
        grad, = torch.autograd.grad(D0(x_hat).sum(), x_hat)
        expected_d = expected_d + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert d_loss.item() == pytest.approx(expected_d.item(), rel=1e-4, abs=1e-6)
    d_fake = gan.D(x_fake, y)                      # the updated D (clipped, for WGAN)
    expected_g = {"nonsaturating": -torch.log(sig(d_fake)).mean(), "minimax": torch.log(1 - sig(d_fake)).mean(),
                  "wgan": -d_fake.mean()}["wgan" if kind.startswith("wgan") else g_loss]
    assert g_loss_value.item() == pytest.approx(expected_g.item(), rel=1e-4, abs=1e-6)
    assert any(not torch.equal(p, q) for p, q in zip(gan.D.parameters(), D0.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(gan.G.parameters(), G0.parameters()))


def test_without_a_g_step_only_D_moves():
    torch.manual_seed(0)
    gan = build_gan(gan_config("wgangp", flags()), CPU)
    G0 = copy.deepcopy(gan.G)
    d_loss, g_loss = gan_step(gan, *synthetic_mnist(16), g_step=False)
    assert g_loss is None and torch.isfinite(d_loss) and not gan.opt_G.state
    assert all(torch.equal(p, q) for p, q in zip(gan.G.parameters(), G0.parameters()))


@pytest.mark.parametrize("kind, clipped", [("wgan", True), ("dcgan", False), ("wgangp", False)])
def test_only_wgan_clips_the_critic_after_every_step(kind, clipped):
    torch.manual_seed(0)
    gan = build_gan(gan_config(kind, flags(clip=0.005)), CPU)
    gan_step(gan, *synthetic_mnist(16), g_step=False)
    inside = all(p.abs().max() <= 0.005 for p in gan.D.parameters())
    assert inside == clipped


def test_losses_csv_puts_each_g_loss_on_every_n_critic_th_d_step(tmp_path):
    history = {"n_critic": 3, "d": [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]], "g": [[0.5, 0.6], [0.7]], "seconds": [1, 1]}
    write_losses_csv({"wgan": history}, tmp_path / "losses.csv")
    rows = list(csv.DictReader(open(tmp_path / "losses.csv")))
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 11)] and rows[7]["epoch"] == "2"
    assert [r["g_loss"] for r in rows] == ["", "", "0.500000", "", "", "0.600000", "", "", "", "0.700000"]


def test_an_epoch_with_fewer_batches_than_n_critic_is_a_one_line_error():
    assert full_batches(256, 64, 4) == 4
    with pytest.raises(SystemExit, match=r"^error: --batch-size 64 leaves 3 full batches of the 200 images, fewer "
                                         r"than --n-critic 5: G would never be updated[^\n]*$"):
        full_batches(200, 64, 5)
