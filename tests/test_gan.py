"""GAN nets, losses, clipping and gradient penalty (common/gan_*.py) against the handout and closed forms."""
import argparse
import re
from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import common.fid
import common.gan_eval as gan_eval
from common.data import from_uint8, synthetic_dataset, to_uint8
from common.gan_eval import evaluate_samples
from common.gan_losses import (clip_weights_, d_loss_bce, g_loss_minimax, g_loss_nonsaturating, gradient_penalty,
                               wgan_critic_loss, wgan_generator_loss, wgan_gp_critic_loss)
from common.gan_nets import Discriminator, Generator
from common.gan_runs import build_gan, check_resumable, differing_settings, gan_config, load_gan_state
import common.gan_train as gan_train
from common.gan_train import (D_WINS_CHECKS, check_losses, discriminator_loss, generator_loss, train_gan,
                               train_one_epoch, train_step)


def count(model, *types):
    return sum(isinstance(m, types) for m in model.modules())


def flags(**kw):
    """The flags gan_config reads, with tiny widths."""
    base = dict(lr=None, n_critic=5, dropout=0.3, z_dim=16, width=8, small=False, epochs=1, batch_size=32,
                seed=0, g_loss="nonsaturating", clip=0.01, gp_lambda=10.0, critic_norm="layer",
                label_inject="channels")
    return argparse.Namespace(**dict(base, **kw))


# --- networks: Handout A 3(a) and the footnote ---

@pytest.mark.parametrize("small, n_convs", [(False, 3), (True, 1)])
def test_generator_is_one_dense_then_conv_layers(small, n_convs):
    G = Generator(z_dim=100, width=16, small=small)
    x = G(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert count(G, nn.Linear) == 1
    assert count(G, nn.ConvTranspose2d, nn.Conv2d) == n_convs


@pytest.mark.parametrize("small, n_convs", [(False, 3), (True, 1)])
def test_discriminator_is_conv_layers_then_one_dense(small, n_convs):
    D = Discriminator(width=16, small=small)
    assert D(torch.randn(5, 1, 28, 28)).shape == (5,)
    assert count(D, nn.Conv2d) == n_convs and count(D, nn.Linear) == 1
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in D.modules())  # Handout A 3(a): dropout


def test_wgangp_critic_has_no_batchnorm_and_no_dropout():
    D = build_gan(gan_config("wgangp", flags()), torch.device("cpu")).D
    assert count(D, nn.BatchNorm1d, nn.BatchNorm2d) == 0 and count(D, nn.GroupNorm) == 2
    assert all(m.p == 0 for m in D.modules() if isinstance(m, nn.Dropout))


def test_conditional_generator_output_depends_on_label():
    torch.manual_seed(0)
    G = Generator(z_dim=16, width=8, conditional=True).eval()
    z = torch.randn(4, 16)
    x0, x1 = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.ones(4, dtype=torch.long))
    assert x0.shape == (4, 1, 28, 28)
    assert (x0 - x1).abs().max() > 1e-3, (x0 - x1).abs().max()


@pytest.mark.parametrize("inject", ["channels", "dense"])
def test_conditional_discriminator_uses_label(inject):
    D = Discriminator(width=8, conditional=True, label_inject=inject, dropout=0.0).eval()
    first_conv = next(m for m in D.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == (11 if inject == "channels" else 1)
    x = torch.randn(3, 1, 28, 28)
    assert (D(x, torch.zeros(3, dtype=torch.long)) - D(x, torch.full((3,), 9))).abs().max() > 1e-6


def test_recipes_follow_the_handout():
    dev = torch.device("cpu")
    dcgan, wgan, gp = (build_gan(gan_config(k, flags()), dev) for k in ("dcgan", "wgan", "wgangp"))
    assert isinstance(dcgan.opt_D, torch.optim.Adam) and dcgan.opt_D.defaults["betas"] == (0.5, 0.999)
    assert dcgan.cfg["lr"] == 2e-4 and dcgan.cfg["n_critic"] == 1
    assert isinstance(wgan.opt_D, torch.optim.RMSprop) and wgan.cfg["lr"] == 5e-5 and wgan.cfg["n_critic"] == 5
    assert isinstance(gp.opt_D, torch.optim.Adam) and gp.opt_D.defaults["betas"] == (0.5, 0.9)
    assert gp.cfg["lr"] == 1e-4 and gp.cfg["gp_lambda"] == 10.0


# --- losses against their formulas ---

L_REAL, L_FAKE = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 1.5])


def test_bce_losses_match_their_formulas():
    sig = torch.sigmoid
    expected_d = -torch.log(sig(L_REAL)).mean() - torch.log(1 - sig(L_FAKE)).mean()
    assert torch.allclose(d_loss_bce(L_REAL, L_FAKE), expected_d)
    torch_d = (F.binary_cross_entropy_with_logits(L_REAL, torch.ones(3))
               + F.binary_cross_entropy_with_logits(L_FAKE, torch.zeros(3)))
    assert torch.allclose(d_loss_bce(L_REAL, L_FAKE), torch_d)
    assert torch.allclose(g_loss_minimax(L_FAKE), torch.log(1 - sig(L_FAKE)).mean())
    assert torch.allclose(g_loss_nonsaturating(L_FAKE), -torch.log(sig(L_FAKE)).mean())


def test_minimax_saturates_where_nonsaturating_does_not():
    """When D confidently rejects a fake (logit −10), minimax G's gradient vanishes; non-saturating's is ≈ −1."""
    grads = []
    for loss in (g_loss_minimax, g_loss_nonsaturating):
        l = torch.tensor([-10.0], requires_grad=True)
        loss(l).backward()
        grads.append(l.grad.item())
    assert abs(grads[0]) < 1e-4 and grads[1] == pytest.approx(-1.0, abs=1e-4)


def test_wasserstein_losses_match_their_formulas():
    assert wgan_critic_loss(L_REAL, L_FAKE).item() == pytest.approx(L_FAKE.mean() - L_REAL.mean())
    assert wgan_generator_loss(L_FAKE).item() == pytest.approx(-L_FAKE.mean())
    penalty = torch.tensor(0.7)
    assert wgan_gp_critic_loss(L_REAL, L_FAKE, penalty).item() == pytest.approx(
        L_FAKE.mean() - L_REAL.mean() + 0.7)


# --- weight clipping and the gradient penalty ---

def test_clipping_leaves_every_critic_parameter_in_range():
    D = Discriminator(width=8)
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)
    clip_weights_(D, 0.01)
    assert all(p.abs().max() <= 0.01 for p in D.parameters())


def test_wgan_step_clips_after_the_critic_step():
    gan = build_gan(gan_config("wgan", flags(clip=0.005)), torch.device("cpu"))
    x, y = synthetic_dataset(32)
    train_step(gan, x, y, g_step=True)
    assert all(p.abs().max() <= 0.005 for p in gan.D.parameters())


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b, so ∇_x D = w for every x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 28, 28) * 0.05)
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, y=None):
        return (x * self.w).sum((1, 2, 3)) + self.b


def test_gradient_penalty_closed_form_for_a_linear_critic():
    D = LinearCritic()
    x_real, x_fake = torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28)
    penalty = gradient_penalty(D, x_real, x_fake, lam=10.0)
    w_norm = D.w.detach().norm()
    assert penalty.item() == pytest.approx(10 * (w_norm.item() - 1) ** 2, rel=1e-5)
    # the penalty is differentiable w.r.t. the critic: d/dw λ(‖w‖ − 1)² = 2λ(‖w‖ − 1) w / ‖w‖
    penalty.backward()
    assert torch.allclose(D.w.grad, 20 * (w_norm - 1) * D.w.detach() / w_norm, atol=1e-5)


def half_squared_norm(x, y=None):
    """A critic with D(x) = ½‖x‖², so ∇D(x) = x."""
    return 0.5 * x.pow(2).sum((1, 2, 3))


def test_gradient_penalty_uses_one_norm_per_sample():
    """∇D(x̂_i) = x̂_i for D(x) = ½‖x‖², so the gradient norms differ between samples."""
    x_real, x_fake = torch.randn(5, 1, 28, 28), torch.randn(5, 1, 28, 28) * 0.1
    eps = torch.rand(5, 1, 1, 1)
    x_hat = eps * x_real + (1 - eps) * x_fake
    expected = 10 * ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    got = gradient_penalty(half_squared_norm, x_real, x_fake, eps=eps).item()
    assert got == pytest.approx(expected.item(), rel=1e-5)
    # not the norm of the whole batch's gradient
    wrong = 10 * (x_hat.norm() - 1) ** 2
    assert abs(expected - wrong) > 1


def test_gradient_penalty_matches_a_per_sample_loop_on_the_real_critic():
    torch.manual_seed(0)
    D = Discriminator(width=8, norm="layer", dropout=0.0)
    x_real, x_fake, eps = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.rand(4, 1, 1, 1)
    terms = []
    for i in range(4):
        x_hat = (eps[i] * x_real[i:i + 1] + (1 - eps[i]) * x_fake[i:i + 1]).requires_grad_(True)
        grad, = torch.autograd.grad(D(x_hat).sum(), x_hat)
        terms.append((grad.norm() - 1) ** 2)
    expected = 10 * torch.stack(terms).mean()
    assert gradient_penalty(D, x_real, x_fake, eps=eps).item() == pytest.approx(expected.item(), rel=1e-4)


def test_clipping_clamps_both_signs_and_leaves_weights_inside_alone():
    """Handout A 3(b): p.clamp_(−c, c): large weights of either sign go to ±c, the rest are untouched."""
    D = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        D.weight.copy_(torch.tensor([[-1.0, -0.005, 0.003, 2.0]]))
    clip_weights_(D, 0.01)
    assert torch.equal(D.weight, torch.tensor([[-0.01, -0.005, 0.003, 0.01]]))


class RecordingCritic:
    """Stands in for the critic: D(x) = Σ x, keeping a copy of the x̂ it was last given."""

    def __call__(self, x, y=None):
        self.x_hat = x.detach().clone()
        return x.sum((1, 2, 3))


def test_gradient_penalty_draws_one_epsilon_per_sample_on_the_real_fake_segment():
    """Handout A 4(b): x̂ = ε x + (1 − ε) x̃ with ε ~ U[0, 1] per sample (not per pixel, not per batch).
    With x = 1 and x̃ = 0, x̂_i is the constant image ε_i."""
    critic = RecordingCritic()
    torch.manual_seed(0)
    gradient_penalty(critic, torch.ones(8, 1, 28, 28), torch.zeros(8, 1, 28, 28))
    per_sample = critic.x_hat.flatten(1)
    assert torch.equal(per_sample, per_sample[:, :1].expand_as(per_sample))   # one ε for all pixels of a sample
    eps = per_sample[:, 0]
    assert eps.min() >= 0 and eps.max() <= 1 and len(eps.unique()) == 8        # a different ε for each sample


def _seeded_discriminator_loss(kind, x_real, x_fake):
    """discriminator_loss of recipe `kind` for the critic D(x) = ½‖x‖², with the GP's ε drawn from seed 0."""
    torch.manual_seed(0)
    return discriminator_loss(SimpleNamespace(D=half_squared_norm, cfg={"loss": kind, "gp_lambda": 10.0}),
                              x_real, x_fake, None).item()


def test_discriminator_loss_of_each_recipe_is_the_handouts():
    """Handout A 3(a), 3(b), 4(b) through gan_train's dispatch; WGAN-GP's penalty is taken at the interpolates
    x̂ = ε x + (1 − ε) x̃ (same seeded ε), with D(x) = ½‖x‖² so that ∇D(x̂) = x̂ differs from ∇D(x) = x."""
    x_real, x_fake = torch.randn(5, 1, 28, 28), torch.randn(5, 1, 28, 28) * 0.1
    d_real, d_fake = half_squared_norm(x_real), half_squared_norm(x_fake)
    loss = partial(_seeded_discriminator_loss, x_real=x_real, x_fake=x_fake)
    sig = torch.sigmoid
    assert loss("bce") == pytest.approx((-torch.log(sig(d_real)).mean() - torch.log(1 - sig(d_fake)).mean()).item(),
                                        rel=1e-5)
    assert loss("wgan") == pytest.approx((d_fake.mean() - d_real.mean()).item(), rel=1e-5)
    torch.manual_seed(0)
    eps = torch.rand(5, 1, 1, 1)
    x_hat = eps * x_real + (1 - eps) * x_fake
    penalty = 10 * ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert loss("wgangp") == pytest.approx((d_fake.mean() - d_real.mean() + penalty).item(), rel=1e-5)


def test_generator_loss_of_each_recipe_is_the_handouts():
    """G minimises log(1 − D(G(z))) (minimax) or −log D(G(z)) (non-saturating) for DCGAN, and −D(G(z)) for
    both WGANs (Handout A 3(a), 3(b), 4(b))."""
    sig = torch.sigmoid
    for cfg, expected in [({"loss": "bce", "g_loss": "minimax"}, torch.log(1 - sig(L_FAKE)).mean()),
                          ({"loss": "bce", "g_loss": "nonsaturating"}, -torch.log(sig(L_FAKE)).mean()),
                          ({"loss": "wgan", "g_loss": "nonsaturating"}, -L_FAKE.mean()),
                          ({"loss": "wgangp", "g_loss": "nonsaturating"}, -L_FAKE.mean())]:
        assert generator_loss(cfg, L_FAKE).item() == pytest.approx(expected.item(), rel=1e-6), cfg


class RecordingStep:
    """Stands in for train_step: records whether each step updates G, and returns zero losses (no G loss if not)."""

    def __init__(self):
        self.g_steps = []

    def __call__(self, gan, x, y, g_step):
        self.g_steps.append(g_step)
        return torch.tensor(0.0), torch.tensor(0.0) if g_step else None


def test_generator_steps_after_every_n_critic_critic_steps(monkeypatch):
    """Handout A 3(b): n_critic critic updates, then one G update: with n_critic = 3, steps 3 and 6 update G."""
    step = RecordingStep()
    monkeypatch.setattr(gan_train, "train_step", step)
    gan = build_gan(gan_config("wgan", flags(n_critic=3, batch_size=8)), torch.device("cpu"))
    _, g_losses = train_one_epoch(gan, "wgan", *synthetic_dataset(48), epoch=1)
    assert step.g_steps == [False, False, True] * 2 and len(g_losses) == 2

# --- divergence checks and exact resume ---

def test_nan_loss_stops_with_a_one_line_message_naming_epoch_and_loss():
    with pytest.raises(SystemExit, match=r"the G loss became nan at epoch 3, step 50"):
        check_losses("dcgan", {"loss": "bce"}, [torch.tensor(0.5)], [torch.tensor(float("nan"))], 3, 50, {"low": 0})
    with pytest.raises(SystemExit, match="D loss became 1e\\+09"):
        check_losses("wgan", {"loss": "wgan"}, [torch.tensor(1e9)], [], 1, 5, {"low": 0})


def test_discriminator_winning_prints_a_warning(capsys):
    watch = {"low": 0}
    for _ in range(D_WINS_CHECKS):
        check_losses("dcgan", {"loss": "bce"}, [torch.tensor(0.001)], [torch.tensor(8.0)], 2, 50, watch)
    assert "discriminator wins" in capsys.readouterr().out


def test_resume_continues_exactly(tmp_path):
    x, y = synthetic_dataset(64)
    cpu, z = torch.device("cpu"), torch.randn(10, 16)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    cfg2 = gan_config("wgan", flags(epochs=2, n_critic=2))
    train_gan("wgan", cfg2, x, y, straight, cpu, z)
    train_gan("wgan", dict(cfg2, epochs=1), x, y, resumed, cpu, z)
    train_gan("wgan", cfg2, x, y, resumed, cpu, z, resume=True)
    a, epoch_a, history_a = load_gan_state(straight / "checkpoint_wgan.pt", cpu)
    b, epoch_b, history_b = load_gan_state(resumed / "checkpoint_wgan.pt", cpu)
    assert epoch_a == epoch_b == 2 and history_a["d"] == history_b["d"]
    for (k, va), vb in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        assert torch.equal(va, vb), k


def test_check_resumable_refuses_another_architecture(tmp_path):
    """04/05 check every checkpoint before config.json changes: the same flags pass, another width stops,
    a run with no checkpoint yet is fine."""
    cfg = gan_config("wgan", flags(epochs=1, n_critic=2))
    train_gan("wgan", cfg, *synthetic_dataset(64), tmp_path, torch.device("cpu"), torch.randn(10, 16))
    check_resumable(tmp_path, {"wgan": cfg, "dcgan": gan_config("dcgan", flags())})
    with pytest.raises(SystemExit, match=f"trained with --width {cfg['width']}, not {2 * cfg['width']}"):
        check_resumable(tmp_path, {"wgan": dict(cfg, width=2 * cfg["width"])})
    # an optimiser state that does not fit (here: a parameter group cut short) is found now, in one line
    state = torch.load(tmp_path / "checkpoint_wgan.pt", weights_only=False)
    state["opt_D"]["param_groups"][0]["params"] = state["opt_D"]["param_groups"][0]["params"][:1]
    torch.save(state, tmp_path / "checkpoint_wgan.pt")
    with pytest.raises(SystemExit, match="its opt_D does not fit this run"):
        check_resumable(tmp_path, {"wgan": cfg})


def test_resume_refuses_other_training_settings(tmp_path):
    """Only --epochs may change on --resume: another lr would be overwritten by the restored optimiser, another
    n_critic would misplace the G steps in losses.csv; each stops in one line naming flag, saved and new value."""
    cfg = gan_config("wgan", flags(epochs=1, n_critic=2))
    train_gan("wgan", cfg, *synthetic_dataset(64), tmp_path, torch.device("cpu"), torch.randn(10, 16))
    check_resumable(tmp_path, {"wgan": dict(cfg, epochs=3)})  # a longer run is a resume
    for key, value, message in [("lr", 1e-3, "--lr 5e-05, not 0.001"), ("n_critic", 1, "--n-critic 2, not 1"),
                                ("clip", 0.1, "--clip 0.01, not 0.1"), ("dropout", 0.5, "--dropout 0.3, not 0.5")]:
        with pytest.raises(SystemExit, match=re.escape(f"was trained with {message}; pass the same value or use "
                                                       f"another --out-dir")):
            train_gan("wgan", dict(cfg, **{key: value}), *synthetic_dataset(64), tmp_path, torch.device("cpu"),
                      torch.randn(10, 16), resume=True)
    # betas: a tuple in a fresh cfg equals the same values as a list
    assert differing_settings({"betas": (0.5, 0.9)}, {"betas": [0.5, 0.9]}, ["betas"]) == []
    assert differing_settings({"betas": (0.5, 0.9)}, {"betas": (0.5, 0.999)}, ["betas"]) != []


def test_resume_needs_a_checkpoint_of_at_least_one_run(tmp_path):
    """--resume into a folder with no checkpoint of any of the command's runs is refused in one line (as 01, 02,
    06, 07 do); with one there, a run without one yet (Ctrl-C before its first epoch) starts from scratch."""
    cfgs = {"dcgan": gan_config("dcgan", flags()), "wgan": gan_config("wgan", flags(n_critic=2))}
    message = (f"--resume: no checkpoint in {tmp_path} (checkpoint_dcgan.pt, checkpoint_wgan.pt) to continue "
               f"(train first, or drop --resume)")
    with pytest.raises(SystemExit, match=re.escape(message)):
        check_resumable(tmp_path, cfgs)
    assert not list(tmp_path.iterdir())
    train_gan("dcgan", cfgs["dcgan"], *synthetic_dataset(64), tmp_path, torch.device("cpu"), torch.randn(10, 16))
    check_resumable(tmp_path, cfgs)  # dcgan's checkpoint continues, wgan starts from scratch


def test_resume_refuses_fewer_epochs_than_trained(tmp_path):
    """Only --epochs may grow: a resume asking for fewer epochs than the checkpoint has is one line; the same
    number re-evaluates the finished run without training."""
    cfg = gan_config("wgan", flags(epochs=2, n_critic=2))
    x, y = synthetic_dataset(64)
    train_gan("wgan", cfg, x, y, tmp_path, torch.device("cpu"), torch.randn(10, 16))
    message = re.escape("checkpoint_wgan.pt has 2 trained epochs, more than --epochs 1; pass --epochs 2 or more")
    with pytest.raises(SystemExit, match=message):
        check_resumable(tmp_path, {"wgan": dict(cfg, epochs=1)})
    with pytest.raises(SystemExit, match=message):
        train_gan("wgan", dict(cfg, epochs=1), x, y, tmp_path, torch.device("cpu"), torch.randn(10, 16), resume=True)
    check_resumable(tmp_path, {"wgan": cfg})
    _, history = train_gan("wgan", cfg, x, y, tmp_path, torch.device("cpu"), torch.randn(10, 16), resume=True)
    assert len(history["d"]) == torch.load(tmp_path / "checkpoint_wgan.pt", weights_only=False)["epoch"] == 2


class InterruptAt:
    """Stands in for train_one_epoch: Ctrl-C at its `call`-th call, the real epoch before it."""

    def __init__(self, call):
        self.call, self.calls, self.train_one_epoch = call, 0, gan_train.train_one_epoch

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.call:
            raise KeyboardInterrupt
        return self.train_one_epoch(*args, **kwargs)


@pytest.mark.parametrize("call, others, hint", [
    (1, (), "no epoch of wgan finished, so nothing was saved; run the same command again without --resume"),
    (2, (), "the last finished epoch of wgan is saved in {out}/checkpoint_wgan.pt; continue with --resume"),
    (1, ("dcgan", "wgan"), "no epoch of wgan finished, so nothing of it was saved; --resume keeps "
                           "checkpoint_dcgan.pt and trains wgan from scratch")])
def test_ctrl_c_says_what_is_saved_and_how_to_go_on(tmp_path, monkeypatch, capsys, call, others, hint):
    """Ctrl-C in epoch 1 leaves no checkpoint, so "continue with --resume" would be wrong (--resume refuses an empty
    folder); once an epoch, or another run of the same command (04's DCGAN before its WGAN), is saved, it is right."""
    x, y = synthetic_dataset(64)
    if "dcgan" in others:
        train_gan("dcgan", gan_config("dcgan", flags()), x, y, tmp_path, torch.device("cpu"), torch.randn(10, 16))
    monkeypatch.setattr(gan_train, "train_one_epoch", InterruptAt(call))
    with pytest.raises(SystemExit) as stop:
        train_gan("wgan", gan_config("wgan", flags(epochs=2, n_critic=2)), x, y, tmp_path, torch.device("cpu"),
                  torch.randn(10, 16), others=others)
    assert stop.value.code == 130
    assert capsys.readouterr().err.strip() == f"interrupted: {hint.format(out=tmp_path)}"
    assert (tmp_path / "checkpoint_wgan.pt").is_file() == (call > 1)


class RecordingJudge:
    """Stands in for the judge and for FID: records the images it is given and returns a number that every
    pixel moves."""

    def __init__(self):
        self.seen = []

    def record(self, x, *rest, **kwargs):
        self.seen.append(x.detach().cpu().clone())
        return float(x.double().pow(3).sum())

    def fd(self, x_fake, x_real):
        return self.record(x_fake)

    def diversity(self, x):
        return self.record(x)


def test_gan_evaluation_judges_what_the_npz_holds(monkeypatch):
    """FD-judge and FID of G's floats are those of the 8-bit images samples_<model>.npz holds, so
    `python -m common.fid fashion-test samples_<model>.npz` reproduces metrics.json."""
    judge = RecordingJudge()
    monkeypatch.setattr(gan_eval, "inception_available", lambda weights=None: True)
    monkeypatch.setattr(common.fid, "fid_vs_real", judge.record)
    torch.manual_seed(0)
    x = torch.rand(20, 1, 28, 28) * 2.2 - 1.1  # G's floats, a few outside [-1, 1]
    saved = from_uint8(to_uint8(x))
    args, cpu = argparse.Namespace(data_dir="data", dry_run=False, inception_weights=None), torch.device("cpu")
    row = evaluate_samples(judge, x, saved, args, cpu)
    assert row == evaluate_samples(judge, saved, saved, args, cpu)
    assert len(judge.seen) == 6 and all(torch.equal(seen, saved) for seen in judge.seen)  # FD, FID, spread, twice
    assert row["fid"] != judge.record(x)  # the floats themselves would give another number


class RecordingFid:
    """Stands in for common.fid.fid_vs_real: records the weights file it is asked to load."""

    def __init__(self):
        self.weights = []

    def __call__(self, x, *rest, weights=None, **kwargs):
        self.weights.append(weights)
        return 1.0


@pytest.mark.parametrize("name", ["04_dcgan_wgan.py", "05_cgan_wgangp_fid.py"])
def test_inception_weights_flag_reaches_the_fid(name, tmp_path, monkeypatch):
    """--inception-weights PATH (README, "Measuring sample quality") is the file FID loads, with neither
    $FID_INCEPTION_WEIGHTS nor the hub cache there; the metrics' note then says FID was computed."""
    from conftest import load_script
    monkeypatch.delenv("FID_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"stands in for the weights file")
    fid = RecordingFid()
    monkeypatch.setattr(common.fid, "fid_vs_real", fid)
    args = load_script(name).parse_args(["--inception-weights", str(weights)])
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    assert evaluate_samples(RecordingJudge(), x, x, args, torch.device("cpu"))["fid"] == 1.0
    assert fid.weights == [str(weights)]
    assert gan_eval.fid_note(args.dry_run, args.inception_weights).startswith("FID over the FID Inception")
