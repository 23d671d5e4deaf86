"""common/gans.py against Handout A Problems 3–4: the networks, every loss against its formula, the gradient
penalty against closed forms and a per-sample loop, weight clipping; and the scripts' training steps (04's
dcgan_step and wgan_step, 05's cgan_step and wgangp_step) and optimisers against the handouts."""
import copy
import csv

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import synthetic_mnist
from common.gans import (Discriminator, Generator, clip_weights_, d_loss_bce, full_batches, g_loss_minimax,
                         g_loss_nonsaturating, generate, gradient_penalty, wgan_critic_loss, wgan_generator_loss,
                         write_losses_csv)
from conftest import load_script

CPU = torch.device("cpu")
M04, M05 = load_script("04_dcgan_wgan.py"), load_script("05_cgan_wgangp_fid.py")
SCRIPT = {"dcgan": M04, "wgan": M04, "cgan": M05, "wgangp": M05}


def count(model, *types):
    return sum(isinstance(m, types) for m in model.modules())


def flags(name, *argv):
    """The script's own flags and defaults (those of the handouts), with tiny widths."""
    return SCRIPT[name].parse_args(["--z-dim", "16", "--hidden", "8", *argv])


def built(name, *argv):
    """(G, D, their optimisers and grad scalers, args) as the script builds them, seeded."""
    args = flags(name, *argv)
    torch.manual_seed(0)
    return SCRIPT[name].build(name, args, CPU), args


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
    D = Discriminator(hidden=16, small=small, dropout=0.3)
    assert D(torch.randn(5, 1, 28, 28)).shape == (5,)
    assert count(D, nn.Conv2d) == n_convs and count(D, nn.Linear) == 1
    assert [m for m in D.modules() if isinstance(m, nn.Conv2d)][-1].out_channels == 16   # hidden: D's last conv
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in D.modules())          # Handout A 3(a): dropout


@pytest.mark.parametrize("norm, layer", [("layer", nn.GroupNorm), ("instance", nn.InstanceNorm2d)])
def test_wgangp_critic_has_no_batchnorm_and_no_dropout(norm, layer):
    D = built("wgangp", "--critic-norm", norm)[0].D
    assert count(D, nn.BatchNorm1d, nn.BatchNorm2d) == 0 and count(D, layer) == 2
    assert all(m.p == 0 for m in D.modules() if isinstance(m, nn.Dropout))
    none = built("wgangp", "--critic-norm", "none")[0].D
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


@pytest.mark.parametrize("name, optimizer, lr, betas, dropout", [
    ("dcgan", torch.optim.Adam, 2e-4, (0.5, 0.999), 0.3), ("cgan", torch.optim.Adam, 2e-4, (0.5, 0.999), 0.3),
    ("wgan", torch.optim.RMSprop, 5e-5, None, 0.3), ("wgangp", torch.optim.Adam, 1e-4, (0.5, 0.9), 0.0)])
def test_each_script_builds_the_handouts_optimisers(name, optimizer, lr, betas, dropout):
    """Handout B 1(a): Adam 2e-4, (0.5, 0.999); 3(b): RMSProp (5e-5, Arjovsky et al.); WGAN-GP: Adam 1e-4,
    (0.5, 0.9) (Gulrajani et al.); dropout 0.3 in D (3(a)) but none in WGAN-GP's critic (4(b)); --lr overrides."""
    gan, args = built(name)
    for opt in (gan.opt_G, gan.opt_D):
        assert type(opt) is optimizer and opt.defaults["lr"] == lr and opt.defaults.get("betas") == betas
    assert {m.p for m in gan.D.modules() if isinstance(m, nn.Dropout)} == {dropout}
    assert args.n_critic == 5                                                        # Handout B 1(b)
    assert args.clip == 0.01 if SCRIPT[name] is M04 else args.gp_lambda == 10.0      # Handout A 3(b): c; 4(b): λ
    assert all(opt.defaults["lr"] == 1e-3 for opt in (built(name, "--lr", "1e-3")[0].opt_G,
                                                         built(name, "--lr", "1e-3")[0].opt_D))


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
    penalty = gradient_penalty(D, torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28), 10.0)
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
    assert gradient_penalty(half_squared_norm, x_real, x_fake, 10.0, eps=eps).item() == pytest.approx(
        expected.item(), rel=1e-5)
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
    assert gradient_penalty(D, x_real, x_fake, 10.0, eps=eps).item() == pytest.approx(expected.item(), rel=1e-4)


class RecordingCritic:
    """D(x) = Σ x, keeping a copy of the x̂ it was given."""

    def __call__(self, x, y=None):
        self.x_hat = x.detach().clone()
        return x.sum((1, 2, 3))


def test_gradient_penalty_draws_one_epsilon_per_sample_between_real_and_fake():
    """Handout A 4(b): x̂ = ε x + (1 − ε) x̃, ε ~ U[0, 1] per sample. With x = 1 and x̃ = 0, x̂_i is the image ε_i."""
    critic = RecordingCritic()
    torch.manual_seed(0)
    gradient_penalty(critic, torch.ones(8, 1, 28, 28), torch.zeros(8, 1, 28, 28), 10.0)
    per_sample = critic.x_hat.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))   # one ε for all pixels of a sample
    eps = per_sample[:, 0]
    assert eps.min() >= 0 and eps.max() <= 1 and len(eps.unique()) == 8        # another ε for each sample


# --- the scripts' training steps: each model's objectives, clipping, the G step every n_critic-th batch ---

def take_step(name, gan, x, y, args, step=1, c=None):
    """One training step of `name` as its script takes it on the epoch's `step`-th batch (the WGAN: clipping at c)."""
    if name == "dcgan":
        return M04.dcgan_step(gan, x, args)
    if name == "cgan":
        return M05.cgan_step(gan, x, y, args)
    if name == "wgan":
        return M04.wgan_step(gan, x, step, args, args.clip if c is None else c)
    return M05.wgangp_step(gan, x, step, args)


def d_objective(name, D, x, x_fake, y, eps):
    """Handout A: D's loss, written out. BCE: −log D(x) − log(1 − D(x̃)); WGAN: D(x̃) − D(x) [+ λ(‖∇D(x̂)‖ − 1)²]."""
    d_real, d_fake = D(x, y), D(x_fake, y)
    if name in ("dcgan", "cgan"):
        return -torch.log(torch.sigmoid(d_real)).mean() - torch.log(1 - torch.sigmoid(d_fake)).mean()
    loss = d_fake.mean() - d_real.mean()
    if name == "wgangp":
        x_hat = (eps * x + (1 - eps) * x_fake).requires_grad_(True)
        grad, = torch.autograd.grad(D(x_hat).sum(), x_hat)
        loss = loss + 10 * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return loss


def g_objective(name, g_loss, D, x_fake, y):
    """Handout A: G's loss, written out: −log D(x̃) (non-saturating), log(1 − D(x̃)) (minimax), or −D(x̃)."""
    d_fake = D(x_fake, y)
    if name in ("wgan", "wgangp"):
        return -d_fake.mean()
    if g_loss == "minimax":
        return torch.log(1 - torch.sigmoid(d_fake)).mean()
    return -torch.log(torch.sigmoid(d_fake)).mean()


@pytest.mark.parametrize("name, g_loss", [("dcgan", "nonsaturating"), ("dcgan", "minimax"), ("cgan", "nonsaturating"),
                                          ("cgan", "minimax"), ("wgan", "nonsaturating"), ("wgangp", "nonsaturating")])
def test_each_step_descends_the_handouts_objectives(name, g_loss):
    """Replays the step's random draws (z, then the GP's ε) on copies of G and D taken before it. (1) D's loss is the
    formula with the old D, and lower with the new D on the same x, x̃ = G(z) (and x̂); (2) G's loss is the formula
    with the new D, and lower with the new G on the same z. n_critic 1: a G step on this batch; c = ∞: no clipping."""
    gan, args = built(name, "--dropout", "0", "--g-loss", g_loss, "--n-critic", "1")
    x, y = synthetic_mnist(16)
    y = y if name == "cgan" else None
    G0, D0 = copy.deepcopy(gan.G), copy.deepcopy(gan.D)
    torch.manual_seed(1)
    d_loss, g_loss_value = take_step(name, gan, x, y, args, step=1, c=float("inf"))
    torch.manual_seed(1)
    z = torch.randn(16, 16)
    x_fake = G0(z, y).detach()
    D0(x, y), D0(x_fake, y)                        # the step's forwards of D, then ε: the same random draws
    eps = torch.rand(16, 1, 1, 1)
    d_before, d_after = (d_objective(name, D, x, x_fake, y, eps) for D in (D0, gan.D))
    assert d_loss.item() == pytest.approx(d_before.item(), rel=1e-4, abs=1e-6) and d_after < d_before
    g_before, g_after = (g_objective(name, g_loss, gan.D, G(z, y), y) for G in (G0, gan.G))
    assert g_loss_value.item() == pytest.approx(g_before.item(), rel=1e-4, abs=1e-6) and g_after < g_before


@pytest.mark.parametrize("name", ["wgan", "dcgan", "wgangp"])
def test_only_the_wgan_step_keeps_every_critic_parameter_within_c(name):
    """Handout A 3(b): after every critic step each critic parameter lies in [−c, c] (c = 0.005: the initial
    weights are larger, so some end at ±c). Neither DCGAN's D nor WGAN-GP's critic is clipped."""
    gan, args = built(name, "--n-critic", "2")
    x, y = synthetic_mnist(16)
    for step in (1, 2, 3):
        take_step(name, gan, x, y, args, step, c=0.005)
        params = torch.cat([p.detach().flatten() for p in gan.D.parameters()])
        assert (params.abs().max() <= 0.005) == (name == "wgan")
    if name == "wgan":
        assert (params == 0.005).any() and (params == -0.005).any()


@pytest.mark.parametrize("name, g_steps", [("wgan", [3, 6]), ("wgangp", [3, 6]), ("dcgan", [1, 2, 3, 4, 5, 6]),
                                           ("cgan", [1, 2, 3, 4, 5, 6])])
def test_G_moves_only_on_every_n_critic_th_batch(name, g_steps):
    """Handout B 1(b): with --n-critic 3 the critic steps on every batch and G on batches 3 and 6 only; the DCGAN
    and cGAN step G on every batch (--n-critic is the WGANs')."""
    gan, args = built(name, "--n-critic", "3")
    x, y = synthetic_mnist(16)
    for step in range(1, 7):
        G0, D0 = ([p.detach().clone() for p in net.parameters()] for net in (gan.G, gan.D))
        d_loss, g_loss = take_step(name, gan, x, y, args, step)
        g_moved = any(not torch.equal(p, q) for p, q in zip(gan.G.parameters(), G0))
        assert any(not torch.equal(p, q) for p, q in zip(gan.D.parameters(), D0)) and torch.isfinite(d_loss)
        assert g_moved == (step in g_steps) and (g_loss is not None) == (step in g_steps), step


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
