"""Handout C Problems 1–3: a 48×48 faces DDPM (10×10 collage), half-and-half merging, age guidance.

    python 06_faces.py              # a GPU job: T = 1000, linear β 1e-4 -> 0.02, 20 epochs, D = 64
    python 06_faces.py --quick      # a laptop CPU: 3,000 faces, D = 16, T = 100
    python 06_faces.py --dry-run    # seconds: synthetic faces, a tiny model (what the tests run)

Data: --faces, --ages (the course files; `python -m tools.utkface` converts UTKFace crops into them). The course
checkpoint diff_unet_faces.cpt cannot be loaded (its architecture is not public), so the DDPM is trained here.
Sampling is Prince Algorithm 18.2 (= Handout D Algorithm 2); --sampler ddim swaps in DDIM for Problem 1 only.
Handout C's names here: faces23k_48x48.npy and ages23k.npy are --faces and --ages; "the diffusion kernel" is
common/schedules.py q_sample; x ~ P(x | z_t) is common/samplers.py ddpm_sample from t_start = t (Problem 2); f is
AgeRegressor; ∂log P(y | z_t)/∂z_t is grad_log_prob inside classifier_guided_sample; "a small number (e.g., 0.2)" is
--guidance-scale.

Problem 3's guidance, read two ways. Handout C 3 says to multiply the gradient −∂(ŷ − y)²/∂z_t "by a small
number (e.g., 0.2)": by default (--guidance-step gradient) each reverse step's mean moves by that, 0.2 × the
gradient, which is what the handout's sentence says. Dhariwal & Nichol (and 03, for Handout A 2(c)) scale
the shift by Σ_t = σ_t² as well: --guidance-step variance-scaled. σ_t² is β_t ≤ 0.02 by default, so it needs a
scale tens to thousands of times larger for the same push. docs/results/06_faces.md shows both.
Runtime per device: the handout map in README.md.
Writes to results/06_faces/ (…_quick/, …_dry_run/): config.json, losses.csv, loss_curve.png, samples_epoch_001.png
…, checkpoint.pt, regressor_losses.csv, regressor_loss_curve.png, checkpoint_regressor.pt (--resume continues
both), samples.npz + samples_final.png (Problem 1), merged.npz + .png (2), age_guided.npz + .png (3), metrics.json.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import cli
from common.data import AGE_MAX, AGE_MIN, FACE_SIZE, from_uint8, load_faces, synthetic_faces, to_uint8
from common.folders import clean_exit, open_run, run_folder
from common.plotting import save_grid, save_labelled_grid, save_loss_curves
from common.run import (Progress, autocast, check_finite, count_parameters, decayed_lr, fail, grad_scaler,
                        load_checkpoint, pick_device, read_checkpoint, save_checkpoint, save_json, save_losses_csv,
                        save_npz, seed_everything, to_device)
from common.samplers import classifier_guided_sample, ddpm_sample, draw_samples, fixed_noise, sampler_label
from common.schedules import ddpm_schedule, q_sample
from common.unets import DenoisingUNet, TimeConditionedEncoder

N_PAIRS = 5   # Handout C 2: "5 pairs of faces"
MERGE_ALPHA_BARS = (0.9, 0.6, 0.3, 0.1)   # Handout C 2's four t: from a faint to a heavy noising, by ᾱ_t
# --quick: T = 100 with β scaled by 1000/T, so ᾱ_T = 2.0e-5 is as close to pure noise as T = 1000's 4.0e-5
QUICK = dict(n_train=3000, hidden=16, epochs=6, regressor_epochs=3, T=100, beta_1=1e-3, beta_T=0.2, batch_size=32,
             lr=2e-3, sample_epochs=[1, 3, 6], n_grid=20, n_val=200)
DRY_RUN = dict(hidden=4, epochs=1, regressor_epochs=1, T=6, batch_size=16, sample_epochs=[1], n_grid=4,
               n_samples=10, merge_ts=[1, 3, 4, 5], per_age=2, n_val=6, sample_batch=100, sample_steps=3)
MATCH = ("hidden", "T", "beta_1", "beta_T", "lr", "lr_decay_to", "batch_size", "seed", "n_train", "n_val")
age = cli.Typed("age in 0..100", float, lambda v: AGE_MIN <= v <= AGE_MAX)   # the ages the regressor learns


def parse_args(argv):
    p = cli.make_parser(__doc__)
    cli.add_training_flags(p, epochs=20, batch_size=128, lr=1e-3, hidden=64)
    cli.add_diffusion_flags(p, T=1000)
    p.add_argument("--faces", default=None, help="faces file (default: <data-dir>/faces23k_48x48.npy.gz)")
    p.add_argument("--ages", default=None, help="ages file (default: <data-dir>/ages23k.npy)")
    p.add_argument("--n-train", type=cli.positive_int, default=None, help="train on N random faces (default: all)")
    p.add_argument("--sigma", choices=["beta", "posterior"], default="beta", help="σ_t: √β_t (Handout C 1) or √β̃_t")
    p.add_argument("--n-samples", type=cli.positive_int, default=100, help="Problem 1 samples (100 in the collage)")
    p.add_argument("--n-grid", type=cli.positive_int, default=40, help="samples in each epoch's grid")
    p.add_argument("--merge-ts", type=cli.positive_int, nargs="+", default=None,
                   help="Problem 2: the t < T of the diffusion kernel (default: the t whose ᾱ_t is nearest "
                        f"{', '.join(map(str, MERGE_ALPHA_BARS))}, so that each row mixes the two faces differently)")
    p.add_argument("--regressor-epochs", type=cli.positive_int, default=10, help="Problem 3: age regressor epochs")
    p.add_argument("--n-val", type=cli.positive_int, default=500, help="faces held out to evaluate the regressor")
    p.add_argument("--target-ages", type=age, nargs="+", default=[18, 40, 60, 80], help="Problem 3 rows")
    p.add_argument("--per-age", type=cli.positive_int, default=10,
                   help="Problem 3: faces per target age (10 fill the 4×10 collage; '4 faces each' is --per-age 4)")
    p.add_argument("--guidance-scale", type=cli.non_negative_scale, default=0.2,
                   help="Problem 3: multiplies −∂(f − y)²/∂z_t, 'a small number (e.g., 0.2)'; lower it on blow-ups")
    p.add_argument("--guidance-step", choices=["gradient", "variance-scaled"], default="gradient",
                   help="Problem 3: each step's mean moves by scale × the gradient (Handout C 3 as written), or by "
                        "scale × σ_t² × the gradient (Dhariwal & Nichol 2021, as 03 does; needs a larger scale)")
    cli.add_run_flags(p, data_help="folder of faces23k_48x48.npy.gz and ages23k.npy (the course files)")
    args = cli.parse(p, argv, QUICK, DRY_RUN)
    if args.T < 2:
        p.error(f"--T must be at least 2: Problem 2 merges at some t < T, got {args.T}")
    if args.merge_ts is None:   # the t whose ᾱ_t is nearest each of MERGE_ALPHA_BARS (once each), below T
        alpha_bar = ddpm_schedule(args.T, args.beta_1, args.beta_T).alpha_bar[1:args.T]
        args.merge_ts = sorted({int((alpha_bar - a).abs().argmin()) + 1 for a in MERGE_ALPHA_BARS})
    if not all(1 <= t < args.T for t in args.merge_ts):   # Handout C 2(b): "some t < T"
        p.error(f"--merge-ts must lie in 1..T − 1 (here T = {args.T}), got {' '.join(map(str, args.merge_ts))}")
    args.faces = args.faces or f"{args.data_dir}/faces23k_48x48.npy.gz"
    args.ages = args.ages or f"{args.data_dir}/ages23k.npy"
    return args


def split_for_regressor(args, ages):
    """Handout C 3: only faces aged 0 <= y <= 100 (y < 0: missing, y > 100: likely wrong), as (train, held-out)."""
    usable = torch.nonzero((ages >= AGE_MIN) & (ages <= AGE_MAX)).flatten()
    if len(usable) < 10:
        fail(f"only {len(usable)} faces have an age in [0, 100]; the age regressor needs at least 10")
    usable = usable[torch.randperm(len(usable), generator=torch.Generator().manual_seed(args.seed)).to(ages.device)]
    n_val = min(args.n_val, len(usable) // 5)
    return usable[n_val:], usable[:n_val]


class AgeRegressor(nn.Module):
    """Handout C 3: f(z_t, t) in years, P(y | z_t) = N(y; f(z_t, t), 1), on the UNet's down half with a time
    embedding. f = 50 + 25 · output (the middle and a quarter of 0–100): the output starts at the scale of ages."""

    def __init__(self, in_channels=1, hidden=64, image_size=FACE_SIZE):
        super().__init__()
        self.encoder = TimeConditionedEncoder(in_channels, hidden, image_size, out_features=1)

    def forward(self, zt, t_frac):
        """zt: (B, C, H, W); t_frac: (B,) = t/T. Returns f(z_t, t) in years, (B,)."""
        return 50 + 25 * self.encoder(zt, t_frac)[:, 0]

    def log_prob(self, zt, t_frac, y):
        """log N(y; f(z_t, t), 1) = −(y − f)²/2 − log √(2π), (B,): the guide of classifier_guided_sample."""
        return -0.5 * (y - self(zt, t_frac).float()) ** 2 - 0.5 * math.log(2 * math.pi)


def sampler_name(args):
    """Problem 1's sampler: Algorithm 18.2 with σ_t by --sigma, or DDIM (--sampler ddim)."""
    return sampler_label(args, f"Algorithm 18.2, σ_t = {'√β_t' if args.sigma == 'beta' else '√β̃_t'}")


def merge_halves(zt1, zt2):
    """Handout C 2(c): the left half (columns < W/2) of z_t⁽¹⁾ beside the right half of z_t⁽²⁾."""
    W = zt1.shape[-1]
    return torch.cat([zt1[..., :W // 2], zt2[..., W // 2:]], dim=-1)


def merge_pairs(args, model, sched, x1, x2):
    """Handout C 2 for the pairs (x1[i], x2[i]) at every t in --merge-ts: merged faces (R, P, C, H, W)."""
    generator = torch.Generator(x1.device).manual_seed(args.seed + 2)
    alpha_bar, merged = sched.alpha_bar.float().to(x1.device), []
    for t in args.merge_ts:
        t_batch = torch.full((len(x1),), t, device=x1.device)
        # (b) the diffusion kernel to the same t: z_t = √ᾱ_t x + √(1 − ᾱ_t) ε, an independent ε for each face
        zt1 = q_sample(x1, t_batch, alpha_bar, torch.randn(x1.shape, device=x1.device, generator=generator))
        zt2 = q_sample(x2, t_batch, alpha_bar, torch.randn(x2.shape, device=x1.device, generator=generator))
        # (c) z_t = left half of z_t⁽¹⁾ | right half of z_t⁽²⁾
        zt = merge_halves(zt1, zt2)
        # (d) x ~ P(x | z_t): the reverse process from t down to 1
        merged.append(ddpm_sample(model, zt, sched, t_start=t, sigma=args.sigma, generator=generator))
    return torch.stack(merged)


def age_guided(args, model, regressor, sched, shape, device):
    """Problem 3: --per-age faces per target age, column k from the same x_T in every row. Returns (images, y)."""
    regressor.eval()                                              # BatchNorm with its running statistics
    y = torch.tensor(args.target_ages, device=device).repeat_interleave(args.per_age)        # (R·K,)
    x_T = fixed_noise(args.per_age, args.seed + 3, device, shape).repeat(len(args.target_ages), 1, 1, 1)
    # Handout C 3: ∂log P(y | z_t)/∂z_t "= −∂(ŷ − y)²/∂z_t" = 2 ∇ log N(y; ŷ, 1), times "a small number (e.g.,
    # 0.2)": each step's mean moves by 2 · scale · ∇_{z_t} log N(y; f(z_t, t), 1), times σ_t² if variance-scaled
    scaled = args.guidance_step == "variance-scaled"
    images = classifier_guided_sample(model, regressor, x_T, y, 2 * args.guidance_scale, sched, variance_scaled=scaled,
                                      sigma=args.sigma, generator=torch.Generator(device).manual_seed(args.seed + 3))
    # faces live in [-1, 1]: inf, nan or pixels beyond ±10 mean the steps overshot, unless the DDPM does it alone
    if not torch.isfinite(images).all() or images.abs().max() > 10:
        unguided = classifier_guided_sample(
            model, regressor, x_T, y, 0.0, sched, variance_scaled=scaled, sigma=args.sigma,
            generator=torch.Generator(device).manual_seed(args.seed + 3))
        if not torch.isfinite(images).all() or unguided.abs().max() <= 10:   # the same x_T and z's, unguided
            fail(f"age guidance diverged at --guidance-scale {args.guidance_scale:g} (pixels became inf, nan or "
                 f"beyond ±10); run again with a smaller one, e.g. --guidance-scale {args.guidance_scale / 10:g}")
        print(f"note: some age-guided faces have pixels beyond ±10, and so do the unguided faces of the same noise: "
              f"the DDPM makes them, not --guidance-scale {args.guidance_scale:g} (train it longer)", flush=True)
    return images, y


@torch.no_grad()
def predict_age(regressor, x, T):
    """f(x, t = 1) in eval mode: final samples and clean faces read as z_1."""
    return regressor.eval()(x, torch.full((len(x),), 1 / T, device=x.device)).float()


def save_merged(args, sched, out, x1, x2, merged):
    """merged.npz and the 4×15 collage: per pair, face 1 | face 2 | merged; one row per t."""
    a, b, m = to_uint8(x1), to_uint8(x2), np.stack([to_uint8(row) for row in merged])   # m: (R, P, H, W[, 3])
    save_npz(out / "merged.npz", faces_1=a, faces_2=b, merged=m, t=np.array(args.merge_ts))
    grid = np.stack([np.broadcast_to(a, m.shape), np.broadcast_to(b, m.shape), m], axis=2)   # (R, P, 3, H, W[, 3])
    save_labelled_grid(grid.reshape(len(m), 3 * N_PAIRS, *a.shape[1:]), out / "merged.png",
                       row_labels=[f"t={t}\nᾱ_t={sched.alpha_bar[t]:.2f}" for t in args.merge_ts],
                       col_labels=[h for p in range(N_PAIRS) for h in (f"pair {p + 1}\nface 1", "face 2", "merged")],
                       suptitle="Problem 2: merged = x ~ P(x | z_t), z_t = left half of z_t(face 1) | right half of "
                                "z_t(face 2); rows: diffusion time t")


def main(argv=None):
    args = parse_args(argv)
    # --- setup, data and the run folder, checked before anything is written ---
    device = pick_device(args.device)
    args.sample_batch = args.sample_batch or (1000 if device.type == "cuda" else 100)
    seed_everything(args.seed)
    if args.dry_run:
        faces, ages = synthetic_faces(32, seed=args.seed)
        x, ages = from_uint8(faces, device), torch.as_tensor(ages, device=device)
    else:
        x, ages = load_faces(args.faces, args.ages, device)
    if args.n_train and args.n_train < len(x):
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[:args.n_train].to(device)
        x, ages = x[keep], ages[keep]
    train_idx, val_idx = split_for_regressor(args, ages)   # Problem 3's faces, checked before any training
    args.channels = x.shape[1]                            # 1: greyscale faces, 3: RGB (config.json records it)
    out = run_folder(args, __file__, MATCH)
    if args.resume:   # greyscale and RGB faces need different DDPMs: say which the checkpoint has
        trained = read_checkpoint(out / "checkpoint.pt")["args"].get("channels", args.channels)
        if trained != args.channels:
            fail(f"{out / 'checkpoint.pt'} was trained on faces with {trained} channel(s), and {args.faces} has "
                 f"{args.channels}: pass the faces file it was trained on to continue it, or use another --out-dir")
    # --- model, schedule, optimiser ---
    model = to_device(DenoisingUNet(x.shape[1], args.hidden, FACE_SIZE), device)
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T)
    alpha_bar = sched.alpha_bar.float().to(device)                   # ᾱ_t on the device
    optimizer, scaler = torch.optim.Adam(model.parameters(), lr=args.lr), grad_scaler(device)
    start, history = 0, {"batch": [], "epoch": []}
    if args.resume:
        ckpt = load_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, scaler=scaler)
        start, history = ckpt["epoch"], ckpt["history"]
    open_run(args, out)                                              # every check passed: the folder is this run's
    print(f"DenoisingUNet D={args.hidden}: {count_parameters(model):,} parameters, T={args.T}, {len(x):,} faces")
    x_T_grid = fixed_noise(args.n_grid, args.seed, device, x.shape[1:])   # the same x_T for every epoch's grid
    # --- Problem 1, training: the DDPM by Handout D Algorithm 1 ---
    for epoch in range(start + 1, args.epochs + 1):
        torch.manual_seed(args.seed + epoch)                        # its own random stream: --resume continues it
        optimizer.param_groups[0]["lr"] = decayed_lr(args.lr, args.lr_decay_to, epoch, args.epochs)
        model.train()
        progress = Progress(-(-len(x) // args.batch_size), f"epoch {epoch}")
        for idx in torch.randperm(len(x), device=device).split(args.batch_size):
            x0 = x[idx]                                                  # line 3: x_0, faces of the training set
            t = torch.randint(1, args.T + 1, (len(x0),), device=device)  # line 4: t ~ U{1, ..., T}
            eps = torch.randn_like(x0)                                   # line 5: ε ~ N(0, I)
            xt = q_sample(x0, t, alpha_bar, eps)                         # line 6: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
            with autocast(device):
                eps_pred = model(xt, t / args.T)                         # line 7: ε̂ = ε_θ(x_t, t)
            loss = F.mse_loss(eps_pred.float(), eps)                     # line 8: ‖ε − ε̂‖², per pixel
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()                                # line 8: a gradient step on it
            scaler.step(optimizer)
            scaler.update()
            progress.step(len(x0), loss=loss)
        history["batch"].append(progress.losses())
        history["epoch"].append(float(np.mean(history["batch"][-1])))
        if epoch in args.sample_epochs:                             # the same x_T and z's every time
            save_grid(to_uint8(draw_samples(model, sched, x_T_grid, args.seed + 5, args, sigma=args.sigma)),
                      out / f"samples_epoch_{epoch:03d}.png", suptitle=f"DDPM faces after epoch {epoch} (fixed noise)")
        save_losses_csv(history, out / "losses.csv")
        save_loss_curves(history, out / "loss_curve.png", ylabel="loss: mean of (ε − ε̂)² over pixels")
        save_checkpoint(out / "checkpoint.pt", args, epoch=epoch, history=history, model=model, optimizer=optimizer,
                        scaler=scaler)
    # --- Problem 3, training: the age regressor f(z_t, t) on noised faces aged 0–100 (Handout C 3) ---
    torch.manual_seed(args.seed)                                    # its initial weights depend on the seed only
    regressor = to_device(AgeRegressor(x.shape[1], args.hidden, FACE_SIZE), device)
    reg_optimizer, reg_scaler = torch.optim.Adam(regressor.parameters(), lr=args.lr), grad_scaler(device)
    reg_start, reg_history = 0, {"batch": [], "epoch": []}
    if args.resume and (out / "checkpoint_regressor.pt").is_file():   # only if the earlier run had started it
        ckpt = load_checkpoint(out / "checkpoint_regressor.pt", model=regressor, optimizer=reg_optimizer,
                               scaler=reg_scaler)
        reg_start, reg_history = ckpt["epoch"], ckpt["history"]
    for epoch in range(reg_start + 1, args.regressor_epochs + 1):
        torch.manual_seed(args.seed + 1000 + epoch)                 # its own random stream: --resume continues it
        reg_optimizer.param_groups[0]["lr"] = decayed_lr(args.lr, args.lr_decay_to, epoch, args.regressor_epochs)
        regressor.train()
        progress = Progress(-(-len(train_idx) // args.batch_size), f"regressor epoch {epoch}")
        for idx in train_idx[torch.randperm(len(train_idx), device=device)].split(args.batch_size):
            x0, y = x[idx], ages[idx]                                    # faces and their ages y in [0, 100]
            t = torch.randint(1, args.T + 1, (len(x0),), device=device)  # "for various t": t ~ U{1, ..., T}
            # "use the diffusion kernel to create z_t": z_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
            zt = q_sample(x0, t, alpha_bar, torch.randn_like(x0))
            with autocast(device):
                f = regressor(zt, t / args.T)                            # f(z_t, t) in years
            # maximising log N(y; f, 1) = −(y − f)²/2 + const: the mean squared error, in years²
            loss = F.mse_loss(f.float(), y)
            reg_optimizer.zero_grad(set_to_none=True)
            reg_scaler.scale(loss).backward()
            reg_scaler.step(reg_optimizer)
            reg_scaler.update()
            progress.step(len(x0), loss=loss)
        reg_history["batch"].append(progress.losses())
        reg_history["epoch"].append(float(np.mean(reg_history["batch"][-1])))
        save_losses_csv(reg_history, out / "regressor_losses.csv")
        save_loss_curves(reg_history, out / "regressor_loss_curve.png", ylabel="MSE (years²)",
                         title="age regressor f(z_t, t): training loss")
        save_checkpoint(out / "checkpoint_regressor.pt", args, bound="regressor_epochs", epoch=epoch,
                        history=reg_history, model=regressor, optimizer=reg_optimizer, scaler=reg_scaler)
    # --- Problem 1: 100 faces, a 10×10 collage ---
    x_T = fixed_noise(args.n_samples, args.seed + 1, device, x.shape[1:])
    samples = draw_samples(model, sched, x_T, args.seed + 6, args, sigma=args.sigma)
    check_finite(samples, "the Problem 1 samples", "train again with a lower --lr")
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:100]), out / "samples_final.png", ncols=10,
              suptitle=f"Problem 1: DDPM faces ({sampler_name(args)})")
    # --- Problem 2: five random pairs, merged at each t of --merge-ts (Algorithm 18.2), a 4×15 collage ---
    pairs = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed + 2))[:2 * N_PAIRS].to(device)
    x1, x2 = x[pairs[:N_PAIRS]], x[pairs[N_PAIRS:]]                  # (a) the two faces of each pair
    merged = merge_pairs(args, model, sched, x1, x2)                 # (R, P, C, H, W)
    save_merged(args, sched, out, x1, x2, merged)
    # --- Problem 3: age-guided faces (Algorithm 18.2 with the regressor's gradient), a 4×10 collage ---
    guided, y = age_guided(args, model, regressor, sched, x.shape[1:], device)
    predicted, u8 = predict_age(regressor, guided, args.T), to_uint8(guided)
    save_npz(out / "age_guided.npz", images=u8, target_ages=y.cpu().numpy(), predicted_ages=predicted.cpu().numpy())
    save_labelled_grid(u8.reshape(len(args.target_ages), args.per_age, *u8.shape[1:]), out / "age_guided.png",
                       row_labels=[f"target {a:g}\nf = {predicted[y == a].mean():.0f}" for a in args.target_ages],
                       suptitle=f"Problem 3: age guidance, scale {args.guidance_scale:g} ({args.guidance_step}); rows: "
                                f"target age, f = the regressor's mean reading at t = 1")
    # --- metrics: the regressor on held-out faces; what it reads in the samples; each merged half's source ---
    val_error = predict_age(regressor, x[val_idx], args.T) - ages[val_idx]
    metrics = {"n_faces": len(x), "n_age_excluded": len(x) - len(train_idx) - len(val_idx),
               "n_regressor_val": len(val_idx), "sampler": sampler_name(args),   # Problem 1's
               "ddpm_final_epoch_loss": history["epoch"][-1], "regressor_final_epoch_mse": reg_history["epoch"][-1],
               "regressor_val_rmse_t1_years": float(val_error.pow(2).mean().sqrt()),
               "unguided_mean_predicted_age_t1": float(predict_age(regressor, samples, args.T).mean()),
               "guided_mean_predicted_age_t1": {f"{a:g}": float(predicted[y == a].mean()) for a in args.target_ages},
               # RMSE of the merged faces to the halves they were made of, and to the swapped halves
               "merge_rmse": {str(t): {"to_own_halves": float((m - merge_halves(x1, x2)).pow(2).mean().sqrt()),
                                       "to_swapped_halves": float((m - merge_halves(x2, x1)).pow(2).mean().sqrt())}
                              for t, m in zip(args.merge_ts, merged)}}
    save_json(metrics, out / "metrics.json")
    print(f"regressor held-out RMSE at t = 1: {metrics['regressor_val_rmse_t1_years']:.1f} years; outputs in {out}")
    return metrics


if __name__ == "__main__":
    with clean_exit():
        main()
