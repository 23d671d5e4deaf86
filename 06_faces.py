"""Handout C Problems 1–3: a 48×48 faces DDPM (10×10 collage), half-and-half merging, age guidance.

    python 06_faces.py --from-utkface UTKFace/   # once, if the course files are missing: convert UTKFace crops
    python 06_faces.py                           # GPU: T = 1000, linear β 1e-4 -> 0.02 (Ho et al.; Handout C
                                                 # takes its schedule from a starter file that is not here)
    python 06_faces.py --quick                   # CPU: 3,000 faces, D = 16, T = 100 (6.5 CPU-minutes)
    python 06_faces.py --dry-run                 # seconds, synthetic faces (what the tests run)

Runtime: --quick took 6.5 min of CPU time (one thread; 16 min wall on a heavily shared 2-core
machine) on 3,000 faces of a 4,000-face synthetic file; --dry-run ≈ 8 CPU-seconds. The full
setting is for a GPU (not measured here). No course data was available: every run so far used
synthetic faces.

Data: --faces (default data/faces23k_48x48.npy.gz, or a plain .npy) and --ages (data/ages23k.npy);
the accepted shapes, types and value ranges are in common/faces_data.py. The course checkpoint
diff_unet_faces.cpt cannot be loaded (its architecture is not public), so this script trains
its own DDPM (Handout D Algorithm 1) with the UNet of common/unet.py at 48×48.

Problem 1: 100 faces by Prince Algorithm 18.2 (= Handout D Algorithm 2), σ_t = √β_t (--sigma);
           --sampler ddim swaps in DDIM here only (merging and guidance always use Algorithm 18.2).
Problem 2: five pairs; both faces diffused to the same t, z_t = left half of z_t⁽¹⁾ | right half
           of z_t⁽²⁾, then the reverse process from t, for each t in --merge-ts.
Problem 3: an age regressor f(z_t, t) (UNet down half + time embedding), MSE on noised faces with
           ages in [0, 100], read as P(y | z_t) = N(f, 1); guided sampling adds the handout's step,
           --guidance-scale × (−∂(f − y)²/∂z_t) = 2 · --guidance-scale × ∇_{z_t} log N(y; f, 1), to every
           step's mean. With no Σ_t factor the step can overshoot when f is very sharp in z_t
           (tests/test_faces.py: an exact brightness regressor reaches its targets at --guidance-scale
           0.01 and diverges at 0.2, the handout's suggestion, which is unvalidated on real faces here).

Writes to results/06_faces/ (or --out-dir):
    config.json, losses.csv, loss_curve.png, checkpoint.pt (DDPM), samples_epoch_001.png ...,
    regressor_losses.csv, regressor_loss_curve.png, regressor.pt (both checkpoints atomic,
    --resume continues them), samples.npz + samples_final.png (10×10), merged.npz + merged.png
    (4×15), age_guided.npz + age_guided.png (4×10), metrics.json.
"""
import argparse
import time
from itertools import chain

import numpy as np
import torch

from common.cli import check_schedule_args, diffusion_parser, finite_float, parse_with_presets, positive_int
from common.data import from_uint8, to_uint8
from common.faces import AgeRegressor, merge_halves, predict_age
from common.faces_data import AGE_MAX, AGE_MIN, SIZE, convert_utkface, load_faces, synthetic_faces, valid_age
from common.files import save_json, save_npz
from common.guidance import classifier_guided_sample
from common.plotting import save_grid, save_labelled_grid
from common.samplers import (ddpm_sample, ddpm_sample_from, fixed_noise, generate, noise_generator,
                             sampler_label)
from common.schedules import ddpm_forward, ddpm_schedule, sample_timesteps
from common.train import ddpm_loss, epoch_grid_path, run_epochs, train_epochs, undrawn_grid
from common.train_state import checked_state, start_training
from common.unet import DenoisingUNet
from common.utils import (autocast, count_parameters, fail, interruptible, make_out_dir, resolve_device,
                          save_config, seed_everything, to_device)

N_PAIRS = 5
# --quick: T = 100 with β scaled by 1000/T (1e-3…0.2), so ᾱ_T = 2.0e-5, as close to pure noise as a linear
# T = 1000 schedule's 4.0e-5 (β = 1e-4…0.02; Handout C's own schedule is in its starter code, not here);
# batch 32 at lr 2e-3 gives 4× more steps for the same compute (at batch 128 the samples stay noise)
QUICK = dict(n_train=3000, hidden=16, epochs=6, regressor_epochs=3, T=100, beta_1=1e-3, beta_T=0.2,
             batch_size=32, lr=2e-3, sample_epochs=[1, 3, 6], n_grid=20, merge_ts=[20, 50, 75, 99], n_val=200)
DRY_RUN = dict(hidden=8, epochs=2, regressor_epochs=2, T=10, batch_size=32, sample_epochs=[2],
               n_grid=8, n_samples=20, merge_ts=[2, 5, 8, 9], per_age=3, n_val=8, eval_batch=100)
FACES_MATCH = ("hidden", "T", "image_channels")   # settings a --resume must share with both checkpoints


def parse_args(argv):
    p = diffusion_parser(__doc__.split("\n")[0], T=1000,
                         data_help="folder of faces23k_48x48.npy.gz and ages23k.npy (the course files)")
    p.epilog = ("The course checkpoint diff_unet_faces.cpt is not loadable here (its architecture is not "
                "public): this script trains its own DDPM. Without the course files, --from-utkface DIR "
                "converts the public UTKFace crops into them.")
    p.add_argument("--faces", default=None, help="faces file (default: <data-dir>/faces23k_48x48.npy.gz)")
    p.add_argument("--ages", default=None, help="ages file (default: <data-dir>/ages23k.npy)")
    p.add_argument("--from-utkface", metavar="DIR", default=None,
                   help="convert DIR's AGE_GENDER_RACE_DATE.jpg files into --faces and --ages, then exit")
    p.add_argument("--rgb", action="store_true", help="with --from-utkface: keep colour (default grayscale)")
    p.add_argument("--n-train", type=positive_int, default=None,
                   help="train on a random subset of N faces (default: all)")
    p.add_argument("--sigma", choices=["beta", "posterior"], default="beta",
                   help="σ_t of the reverse step: √β_t (Handout C) or the posterior's √β̃_t")
    p.add_argument("--n-samples", type=positive_int, default=100, help="Problem 1 samples (first 100 in the collage)")
    p.add_argument("--n-grid", type=positive_int, default=40, help="samples per epoch grid")
    p.add_argument("--eval-batch", type=positive_int, default=100, help="samples drawn per batch")
    p.add_argument("--merge-ts", type=positive_int, nargs="+", default=[200, 500, 750, 999],
                   help="Problem 2: the timesteps t the pairs are diffused to")
    p.add_argument("--regressor-epochs", type=positive_int, default=10, help="Problem 3: age regressor epochs")
    p.add_argument("--n-val", type=positive_int, default=500, help="faces held out to evaluate the regressor")
    p.add_argument("--target-ages", type=finite_float, nargs="+", default=[18, 40, 60, 80], help="Problem 3 rows")
    p.add_argument("--per-age", type=positive_int, default=10,
                   help="Problem 3: faces per target age. The handout asks for '4 faces each' and 'a 4x10 "
                        "collage'; 10 fills the collage, --per-age 4 is the literal count")
    p.add_argument("--guidance-scale", type=finite_float, default=0.2,
                   help="Problem 3: multiplies the handout's gradient −∂(ŷ − y)²/∂z_t (= 2 ∇ log N(y; ŷ, 1)), "
                        "0.2 as the handout suggests; lower it if the guided faces blow up")
    args = parse_with_presets(p, argv, QUICK, DRY_RUN, check=check_schedule_args)
    if not all(1 <= t < args.T for t in args.merge_ts):   # Handout C 2(b): "some t < T"
        p.error(f"--merge-ts must lie in 1..T−1 = 1..{args.T - 1}, got {args.merge_ts}")
    if not all(AGE_MIN <= age <= AGE_MAX for age in args.target_ages):   # the ages the regressor is trained on
        p.error(f"--target-ages must lie in {AGE_MIN}..{AGE_MAX} (the regressor's training ages), "
                f"got {args.target_ages}")
    args.faces = args.faces or f"{args.data_dir}/faces23k_48x48.npy.gz"
    args.ages = args.ages or f"{args.data_dir}/ages23k.npy"
    return args


def convert(args):
    """--from-utkface DIR: UTKFace crops into 48×48 faces and ages files (--faces, --ages); no training."""
    n, skipped = convert_utkface(args.from_utkface, args.faces, args.ages, rgb=args.rgb)
    print(f"converted {n} faces into {args.faces} and {args.ages} ({skipped} files skipped)")
    return {"converted": n, "skipped": skipped}


def load_data(args, device):
    """(x, ages): faces (N, C, 48, 48) in [-1, 1] and ages (N,), on the device; synthetic for --dry-run."""
    if args.dry_run:
        faces, ages = synthetic_faces(64, seed=args.seed)
        return from_uint8(faces, device), torch.as_tensor(ages, device=device)
    x, ages = load_faces(args.faces, args.ages, device)
    if args.n_train and args.n_train < len(x):
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[:args.n_train]
        x, ages = x[keep.to(device)], ages[keep.to(device)]
    return x, ages


# --- Problem 1, training ---

def train_ddpm(args, x, sched, device, out):
    """The UNet at 48×48, trained (or continued with --resume) by Algorithm 1; grids after --sample-epochs.
    Writes config.json once the model's checkpoint is accepted."""
    model = to_device(DenoisingUNet(x.shape[1], args.hidden, SIZE), device)
    training = start_training(model, args, device, out / "checkpoint.pt", must_match=FACES_MATCH)
    save_config(args, out)                         # after the checkpoint is accepted (a rejected --resume keeps it)
    print(f"DenoisingUNet D={args.hidden} at 48×48: {count_parameters(model):,} parameters, T={args.T}, "
          f"{len(x):,} faces ({'synthetic' if args.dry_run else args.faces}) on {device}, "
          f"{training.plan()}")
    x_T_grid = fixed_noise(args.n_grid, args.seed, device, x.shape[1:])
    epochs = run_epochs(training, ddpm_loss, {"x0": x}, sched=sched)
    # first the grid a Ctrl-C cut short (after a --resume; usually none), then each newly trained epoch
    for epoch in chain(undrawn_grid(training, args.sample_epochs, out), epochs):
        if epoch in args.sample_epochs:
            grid = draw_samples(args, model, sched, x_T_grid, seed=args.seed + 5)   # same x_T and z's each time
            save_grid(to_uint8(grid), epoch_grid_path(out, epoch),
                      suptitle=f"DDPM faces after epoch {epoch} (fixed noise)")
    return model, training.history


# --- Problem 3, training: the age regressor f(z_t, t) ---

def regressor_loss(regressor, x0, y, sched):
    """MSE (years²) of f on noised faces: t ~ U{1..T}, z_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε."""
    t = sample_timesteps(len(x0), sched.T, x0.device)
    zt = ddpm_forward(x0, t, sched.alpha_bar, torch.randn_like(x0))
    with autocast(x0.device):
        f = regressor(zt, t.float() / sched.T)
    return torch.nn.functional.mse_loss(f.float(), y)


def split_for_regressor(args, x, ages):
    """Faces with ages in [0, 100] only (Handout C 3), split into (train, held-out) index tensors."""
    usable = torch.nonzero(valid_age(ages)).flatten()
    if len(usable) < 10:
        fail(f"only {len(usable)} faces have an age in [0, 100]; the age regressor needs at least 10")
    usable = usable[torch.randperm(len(usable), generator=torch.Generator().manual_seed(args.seed)).to(x.device)]
    n_val = min(args.n_val, len(usable) // 5)
    return usable[n_val:], usable[:n_val]


def train_age_regressor(args, x, ages, sched, device, out, train_idx):
    """Trains (or, with --resume, continues) f and checkpoints it in regressor.pt after every epoch."""
    y = ages[train_idx]
    regressor = to_device(AgeRegressor(x.shape[1], args.hidden, SIZE, y.mean(), y.std()), device)
    path = out / "regressor.pt"    # --resume continues it only if the interrupted run had started it
    reg_args = argparse.Namespace(**{**vars(args), "epochs": args.regressor_epochs})
    training = start_training(regressor, reg_args, device, path, must_match=FACES_MATCH,
                              resume=args.resume and path.is_file())
    train_epochs(training, regressor_loss, {"x0": x[train_idx], "y": y}, name="regressor epoch",
                 metric="MSE {:.1f} years²", ylabel="MSE (years²)", file_prefix="regressor_", sched=sched)
    return regressor.eval(), training.history


# --- Problems 1–3: sampling ---

def draw_samples(args, model, sched, x_T, seed):
    """Prince Algorithm 18.2 (= Handout D Algorithm 2, σ_t by --sigma) in batches; DDIM with --sampler ddim.
    `seed` seeds the per-step z's, so the same x_T and seed draw the same faces."""
    b, g = args.eval_batch, noise_generator(seed, x_T.device)
    if args.sampler == "ddim":
        return torch.cat([generate(model, x_T[i:i + b], sched, "ddim", args.sample_steps, args.eta, generator=g)
                          for i in range(0, len(x_T), b)])
    return torch.cat([ddpm_sample(model, x_T[i:i + b], sched, g, sigma=args.sigma) for i in range(0, len(x_T), b)])


def merge_pairs(args, model, sched, x):
    """Problem 2 for N_PAIRS random pairs at every t in --merge-ts. Returns (x1, x2, merged (R, P, C, H, W), pairs)."""
    g = torch.Generator().manual_seed(args.seed + 2)
    pairs = torch.randperm(len(x), generator=g)[:2 * N_PAIRS].reshape(N_PAIRS, 2)
    x1, x2 = x[pairs[:, 0].to(x.device)], x[pairs[:, 1].to(x.device)]
    torch.manual_seed(args.seed + 2)
    merged = []
    for t in args.merge_ts:
        t_batch = torch.full((N_PAIRS,), t, device=x.device)
        # (b) the diffusion kernel: z_t = √ᾱ_t x + √(1 − ᾱ_t) ε, independent ε for the two faces
        zt1 = ddpm_forward(x1, t_batch, sched.alpha_bar, torch.randn(x1.shape, generator=g).to(x.device))
        zt2 = ddpm_forward(x2, t_batch, sched.alpha_bar, torch.randn(x2.shape, generator=g).to(x.device))
        # (c) left half of z_t⁽¹⁾ next to the right half of z_t⁽²⁾
        zt = merge_halves(zt1, zt2)
        # (d) x ~ P(x | z_t): the reverse process from t down to 1
        merged.append(ddpm_sample_from(model, zt, t, sched, sigma=args.sigma))
    return x1, x2, torch.stack(merged), pairs


def age_guided(args, model, regressor, sched, shape, device):
    """Problem 3: --per-age faces per target age; column k starts from the same x_T in every row."""
    y = torch.tensor(args.target_ages, device=device).repeat_interleave(args.per_age)   # (R·K,)
    x_T = fixed_noise(args.per_age, args.seed + 3, device, shape).repeat(len(args.target_ages), 1, 1, 1)
    # Handout C 3: ∂log P(y | z_t)/∂z_t "= −∂(ŷ − y)²/∂z_t", twice ∇ log N(y; ŷ, 1) (the guide's log_prob),
    # times "a small number (e.g., 0.2)": each step μ ← μ + 2 · scale · ∇_{z_t} log N(y; f(z_t, t), 1), no Σ_t
    images = draw_guided(args, model, regressor, sched, x_T, y, 2 * args.guidance_scale)
    check_guided_range(args, images, model, regressor, sched, x_T, y)
    return images, y


def draw_guided(args, model, regressor, sched, x_T, y, s):
    """Algorithm 18.2 with the guidance step s · ∇ log N(y; f, 1) in each mean, in batches; the per-step z's
    are seeded, so s = 0 draws the unguided faces of the same x_T and noise."""
    torch.manual_seed(args.seed + 3)
    b = args.eval_batch
    return torch.cat([classifier_guided_sample(model, regressor, x_T[i:i + b], y[i:i + b], s, sched,
                                               sigma=args.sigma, scale_by_variance=False)
                      for i in range(0, len(y), b)])


def check_guided_range(args, images, model, regressor, sched, x_T, y):
    """Stops when guidance blew the faces up: inf or nan, or pixels beyond ±10 (faces live in [-1, 1]) where
    the same x_T and noise without guidance stay inside. A weak DDPM can reach ±10 on its own: then a note."""
    finite = bool(torch.isfinite(images).all())
    if finite and images.abs().max() <= 10:
        return
    if finite and draw_guided(args, model, regressor, sched, x_T, y, 0.0).abs().max() > 10:
        print(f"note: some age-guided faces have pixels beyond ±10, and so do the unguided faces drawn from the "
              f"same noise: the DDPM itself, not --guidance-scale {args.guidance_scale:g}, makes them (train it "
              f"longer); the figures clamp them to [-1, 1]", flush=True)
        return
    fail(f"age guidance diverged at --guidance-scale {args.guidance_scale:g} (pixels became inf, nan or beyond "
         f"±10); run again with a smaller one, e.g. --guidance-scale {args.guidance_scale / 10:g}")


def mean_sd(values):
    return {"mean": float(values.mean()), "sd": float(values.std()) if len(values) > 1 else 0.0, "n": len(values)}


# --- outputs ---

def save_samples(args, out, samples):
    """samples.npz and the 10×10 collage of Problem 1."""
    save_npz(out / "samples.npz", images=to_uint8(samples))
    save_grid(to_uint8(samples[:100]), out / "samples_final.png", ncols=10,
              suptitle=f"Problem 1: DDPM faces ({problem1_sampler(args)})")


def problem1_sampler(args):
    """The Problem 1 sampler: Algorithm 18.2 with --sigma's σ_t, or DDIM."""
    return sampler_label(args, f"Algorithm 18.2, σ_t = {'√β_t' if args.sigma == 'beta' else '√β̃_t'}")


def save_merge_outputs(args, out, x1, x2, merged, pairs):
    """merged.npz and the 4×15 collage: per pair, face 1 | face 2 | merged; rows = t."""
    a, b, m = to_uint8(x1), to_uint8(x2), np.stack([to_uint8(row) for row in merged])   # m: (R, P, H, W[, 3])
    save_npz(out / "merged.npz", faces_1=a, faces_2=b, merged=m, t=np.array(args.merge_ts),
             pair_indices=pairs.numpy())
    grid = np.stack([np.stack([img for p in range(N_PAIRS) for img in (a[p], b[p], m[r, p])])
                     for r in range(len(args.merge_ts))])                               # (R, 3P, H, W[, 3])
    headers = [h for p in range(N_PAIRS) for h in (f"pair {p + 1}\nface 1", f"pair {p + 1}\nface 2", "merged")]
    save_labelled_grid(grid, out / "merged.png", row_labels=[f"t={t}" for t in args.merge_ts], col_labels=headers,
                       suptitle="Problem 2: merged = x ~ P(x | z_t), z_t = left half of z_t(face 1) "
                                "| right half of z_t(face 2); rows: diffusion time t")


def half_rmse(a, b, cols):
    return float((a[..., cols] - b[..., cols]).pow(2).mean().sqrt())


def merge_metrics(args, x1, x2, merged):
    """Per t: RMSE of each half of the merged faces to that half of face 1 and of face 2 ([-1, 1] scale)."""
    left, right = slice(0, SIZE // 2), slice(SIZE // 2, SIZE)
    return {str(t): {"left_vs_face_1": half_rmse(m, x1, left), "left_vs_face_2": half_rmse(m, x2, left),
                     "right_vs_face_2": half_rmse(m, x2, right), "right_vs_face_1": half_rmse(m, x1, right)}
            for t, m in zip(args.merge_ts, merged)}


def save_age_outputs(args, out, images, y, predicted):
    R, K = len(args.target_ages), args.per_age
    u8 = to_uint8(images)
    save_npz(out / "age_guided.npz", images=u8, target_ages=y.cpu().numpy(),
             predicted_ages=predicted.cpu().numpy(), guidance_scale=args.guidance_scale)
    rows = [f"target {a:g}\nf = {predicted[i * K:(i + 1) * K].mean():.0f}" for i, a in enumerate(args.target_ages)]
    save_labelled_grid(u8.reshape(R, K, *u8.shape[1:]), out / "age_guided.png", row_labels=rows,
                       suptitle=f"Problem 3: age guidance, scale {args.guidance_scale:g}\n"
                                f"rows: target age; f = regressor's mean reading at t = 1")


def evaluate(args, regressor, sched, x, ages, val_idx, samples, predicted, y, history, reg_history):
    """The numbers of metrics.json: data, final losses, the regressor on held-out faces, and the ages
    the regressor reads (at t = 1) in unguided samples and in each target age's guided samples."""
    torch.manual_seed(args.seed + 4)
    with torch.no_grad():
        val_mse = regressor_loss(regressor, x[val_idx], ages[val_idx], sched).item()
    val_err = predict_age(regressor, x[val_idx], 1, sched) - ages[val_idx]
    per_target = {f"{a:g}": mean_sd(predicted[y == a].cpu()) for a in args.target_ages}
    means = [per_target[f"{a:g}"]["mean"] for a in sorted(args.target_ages)]
    return {
        "data": {"faces": "synthetic (--dry-run)" if args.dry_run else args.faces, "n_faces": len(x),
                 "channels": x.shape[1], "n_age_excluded": int((~valid_age(ages)).sum()),
                 "n_regressor_val": len(val_idx)},
        "ddpm_final_epoch_loss": history["epoch"][-1] if history["epoch"] else None,
        "regressor_final_epoch_mse": reg_history["epoch"][-1] if reg_history["epoch"] else None,
        "regressor_val_mse_random_t": val_mse,
        "regressor_val_rmse_t1_years": float(val_err.pow(2).mean().sqrt()),
        "unguided_predicted_age_t1": mean_sd(predict_age(regressor, samples, 1, sched).cpu()),
        "guidance_scale": args.guidance_scale,
        "guided_predicted_age_t1": per_target,
        "guided_means_increase_with_target": bool(all(a < b for a, b in zip(means, means[1:]))),
    }


def print_summary(metrics, out):
    u = metrics["unguided_predicted_age_t1"]
    print(f"regressor held-out RMSE at t=1: {metrics['regressor_val_rmse_t1_years']:.1f} years; "
          f"unguided samples read as {u['mean']:.1f} ± {u['sd']:.1f}")
    for target, m in metrics["guided_predicted_age_t1"].items():
        print(f"  target {target:>4}: regressor reads {m['mean']:.1f} ± {m['sd']:.1f} (n = {m['n']})")
    print(f"outputs in {out} ({metrics['wall_seconds']:.0f} s)")


def main(argv=None):
    args = parse_args(argv)
    if args.from_utkface:
        return convert(args)
    # --- setup ---
    t_start = time.time()
    device = resolve_device(args.device)
    seed_everything(args.seed)
    # --- data (loaded first: a bad file stops the run before anything is written) ---
    x, ages = load_data(args, device)
    train_idx, val_idx = split_for_regressor(args, x, ages)   # Problem 3's faces, checked before any training
    args.image_channels = x.shape[1]
    out = make_out_dir(args.out_dir, __file__, args.dry_run)      # config.json is written by train_ddpm
    if args.resume and (out / "regressor.pt").is_file():   # checked now, not after hours of DDPM training
        checked_state(out / "regressor.pt", "cpu", [(name, getattr(args, name)) for name in FACES_MATCH])
    # --- Problem 1, training: the DDPM (Handout D Algorithm 1), grids from fixed noise ---
    sched = ddpm_schedule(args.T, args.beta_1, args.beta_T, device)
    model, history = train_ddpm(args, x, sched, device, out)
    # --- Problem 3, training: the age regressor on noised faces ---
    regressor, reg_history = train_age_regressor(args, x, ages, sched, device, out, train_idx)
    # --- Problem 1: 100 faces, a 10×10 collage ---
    x_T = fixed_noise(args.n_samples, args.seed + 1, device, x.shape[1:])
    samples = draw_samples(args, model, sched, x_T, seed=args.seed + 6)
    save_samples(args, out, samples)
    # --- Problem 2: merging two faces ---
    x1, x2, merged, pairs = merge_pairs(args, model, sched, x)
    save_merge_outputs(args, out, x1, x2, merged, pairs)
    # --- Problem 3: age-guided faces ---
    guided, y = age_guided(args, model, regressor, sched, x.shape[1:], device)
    predicted = predict_age(regressor, guided, 1, sched)
    save_age_outputs(args, out, guided, y, predicted)
    # --- metrics ---
    metrics = evaluate(args, regressor, sched, x, ages, val_idx, samples, predicted, y, history, reg_history)
    metrics["merge_half_rmse"] = merge_metrics(args, x1, x2, merged)
    metrics["sampler"] = problem1_sampler(args)   # merging and guidance always use Algorithm 18.2
    metrics["wall_seconds"] = round(time.time() - t_start, 1)
    save_json(metrics, out / "metrics.json")
    print_summary(metrics, out)
    return metrics


if __name__ == "__main__":
    with interruptible("files written so far are complete; --resume continues from the last checkpoint"):
        main()
