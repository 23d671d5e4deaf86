"""Handout A Problems 3–4: GAN losses, weight clipping and the gradient penalty, one small function each.

DCGAN's D returns a logit l, with D(x) = σ(l). The logs of the handout's loss are computed
in their numerically stable forms
    log D(x) = log σ(l) = −softplus(−l),      log(1 − D(x)) = log σ(−l) = −softplus(l).
A WGAN critic returns an unbounded score D(x) (no sigmoid).
Every loss here is a quantity to *minimise*, averaged over the batch (E[·] = batch mean).
"""
import torch
import torch.nn.functional as F


def d_loss_bce(logit_real, logit_fake):
    # Handout A 3(a)'s "original loss function" (Goodfellow et al. 2014), which Handout B 1(a) trains as BCE:
    # D maximises E_x[log D(x)] + E_z[log(1 − D(G(z)))],
    # i.e. minimises BCE(D(x), 1) + BCE(D(G(z)), 0) = softplus(−l_real) + softplus(l_fake)
    return F.softplus(-logit_real).mean() + F.softplus(logit_fake).mean()


def g_loss_minimax(logit_fake):
    # The literal minimax game of the original GAN (Goodfellow et al. 2014): G minimises E_z[log(1 − D(G(z)))]
    return -F.softplus(logit_fake).mean()


def g_loss_nonsaturating(logit_fake):
    # Non-saturating G loss (Goodfellow et al. 2014, §3): G maximises E_z[log D(G(z))] instead.
    # Why it is the default: early on D rejects the fakes easily, D(G(z)) ≈ 0. There log(1 − D)
    # is flat (its gradient w.r.t. the logit is −σ(l) ≈ 0), so minimax G gets vanishing gradients;
    # −log D(G(z)) has gradient −(1 − σ(l)) ≈ −1 there. Same fixed point, stronger early signal.
    return F.softplus(-logit_fake).mean()


def wgan_critic_loss(d_real, d_fake):
    # Handout A 3(b) (Handout B 1(b)): L_D = −E_x[D(x)] + E_z[D(G(z))]
    return d_fake.mean() - d_real.mean()


def wgan_generator_loss(d_fake):
    # Handout A 3(b) (Handout B 1(b)): L_G = −E_z[D(G(z))]
    return -d_fake.mean()


@torch.no_grad()
def clip_weights_(D, c):
    """Handout A 3(b): keep every critic parameter in [−c, c] (a crude Lipschitz constraint)."""
    # Handout A 3(b): for p in discriminator.parameters(): p.clamp_(−max_amp, max_amp)
    for p in D.parameters():
        p.clamp_(-c, c)


def gradient_penalty(D, x_real, x_fake, y=None, lam=10.0, eps=None):
    """Handout A 4(b): λ E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²], one ε and one gradient norm per sample.

    Computed in fp32 with autocast off: it differentiates D twice (create_graph=True), and
    the norm of a half-precision gradient loses too much precision. y: labels for a conditional D.
    """
    B = len(x_real)
    if eps is None:
        # Handout A 4(b): ε ~ U[0, 1], one per sample, broadcast over its pixels
        eps = torch.rand(B, 1, 1, 1, device=x_real.device)
    # Handout A 4(b): x̂ = ε x + (1 − ε) x̃, a point on the line between a real and a fake image
    x_hat = (eps * x_real.float() + (1 - eps) * x_fake.float().detach()).requires_grad_(True)
    with torch.autocast(x_real.device.type, enabled=False):
        d_hat = D(x_hat) if y is None else D(x_hat, y)  # (B,)
    # ∇_x̂ D(x̂) per sample: D scores each sample on its own (no batch norm), so the gradient of
    # the sum w.r.t. x̂_i is ∇D(x̂_i); create_graph so the penalty can itself be differentiated
    grad, = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)  # (B, 1, 28, 28)
    # ‖∇D(x̂_i)‖₂ over all pixels of sample i (+1e-12 keeps the sqrt differentiable at 0)
    grad_norm = (grad.flatten(1).pow(2).sum(1) + 1e-12).sqrt()  # (B,)
    # Handout A 4(b): λ E[(‖∇_x̂ D(x̂)‖₂ − 1)²]
    return lam * ((grad_norm - 1) ** 2).mean()


def wgan_gp_critic_loss(d_real, d_fake, penalty):
    # Handout A 4(b): L_D = E_x̃[D(x̃)] − E_x[D(x)] + λ E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²]
    return d_fake.mean() - d_real.mean() + penalty
