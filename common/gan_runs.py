"""A GAN run of Handout A Problems 3 and 4: its recipe, its settings, its networks and optimisers, its checkpoint.

Each model follows one recipe (RECIPES, the handout's settings); a run's full settings are one JSON-able
dict `cfg`, stored in its checkpoint so another script (05 reusing 04's runs) can rebuild the model.
The training loop that uses them is common/gan_train.py.
"""
from dataclasses import dataclass

import torch

from .files import atomic_save
from .gan_nets import Discriminator, Generator
from .utils import fail, load_checkpoint, load_grad_scaler, make_grad_scaler, to_device

# Handout A 3(a), 3(b), 4(a), 4(b): loss, critic normalisation, dropout, optimiser (Adam / RMSProp / Adam with
# betas (0.5, 0.9)). Handout B 1(a): lr 2e-4 and betas (0.5, 0.999); Handout B 1(b): 5 critic steps per G step.
# The handouts give no lr for WGAN or WGAN-GP, nor WGAN-GP's critic steps: those are the papers' (Arjovsky
# et al. 2017: 5e-5; Gulrajani et al. 2017: 1e-4, n_critic 5)
RECIPES = {
    "dcgan": dict(loss="bce", conditional=False, norm="batch", use_dropout=True, optimizer="adam",
                  lr=2e-4, betas=(0.5, 0.999), n_critic=1),
    "cgan": dict(loss="bce", conditional=True, norm="batch", use_dropout=True, optimizer="adam",
                 lr=2e-4, betas=(0.5, 0.999), n_critic=1),
    "wgan": dict(loss="wgan", conditional=False, norm="batch", use_dropout=True, optimizer="rmsprop",
                 lr=5e-5, betas=None, n_critic=5),
    "wgangp": dict(loss="wgangp", conditional=False, norm="layer", use_dropout=False, optimizer="adam",
                   lr=1e-4, betas=(0.5, 0.9), n_critic=5),
}
# cfg key -> the flag that sets it (the other settings come with the model's recipe)
FLAGS = {"lr": "--lr", "n_critic": "--n-critic", "clip": "--clip", "gp_lambda": "--gp-lambda", "dropout": "--dropout",
         "batch_size": "--batch-size", "g_loss": "--g-loss", "z_dim": "--z-dim", "width": "--width", "small": "--small",
         "norm": "--critic-norm", "label_inject": "--label-inject", "seed": "--seed", "epochs": "--epochs"}


@dataclass
class GAN:
    """The parts of one GAN run: networks, optimisers, AMP grad scalers, settings."""
    G: torch.nn.Module
    D: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    scaler_G: torch.amp.GradScaler
    scaler_D: torch.amp.GradScaler
    cfg: dict


def gan_config(kind, args):
    """Recipe + flags -> every setting of one run (flags a script does not have keep the defaults)."""
    recipe = RECIPES[kind]
    n_critic = getattr(args, "n_critic", 5) if recipe["n_critic"] > 1 else 1
    return dict(recipe, kind=kind, lr=args.lr or recipe["lr"], n_critic=n_critic,
                norm=getattr(args, "critic_norm", recipe["norm"]) if kind == "wgangp" else recipe["norm"],
                dropout=args.dropout if recipe["use_dropout"] else 0.0, z_dim=args.z_dim, width=args.width,
                small=args.small, g_loss=getattr(args, "g_loss", "nonsaturating"),
                clip=getattr(args, "clip", 0.01), gp_lambda=getattr(args, "gp_lambda", 10.0),
                label_inject=getattr(args, "label_inject", "channels"), epochs=args.epochs,
                batch_size=args.batch_size, seed=args.seed)


def check_batch_size(n_images, batch_size, n_critic=1):
    """Every step takes a full batch (BatchNorm), so a batch larger than the data would train nothing, and
    G steps once per n_critic batches, so an epoch of fewer batches would never update G."""
    if n_images < batch_size:
        fail(f"--batch-size {batch_size} is more than the {n_images:,} training images: no full batch to train on")
    if n_images // batch_size < n_critic:
        fail(f"--n-critic {n_critic} is more than the {n_images // batch_size} full batches of an epoch: "
             f"G would never be updated; lower --n-critic or --batch-size")


def build_gan(cfg, device):
    """Networks on the device (channels_last on CUDA) and the recipe's optimisers."""
    G = to_device(Generator(cfg["z_dim"], cfg["width"], cfg["small"], cfg["conditional"]), device)
    D = to_device(Discriminator(cfg["width"], cfg["small"], cfg["norm"], cfg["dropout"], cfg["conditional"],
                                cfg["label_inject"]), device)
    if cfg["optimizer"] == "rmsprop":  # Handout A 3(b): RMSProp for WGAN
        opt_G, opt_D = (torch.optim.RMSprop(m.parameters(), lr=cfg["lr"]) for m in (G, D))
    else:  # Handout A 3(a) / 4(b): Adam with the recipe's betas
        opt_G, opt_D = (torch.optim.Adam(m.parameters(), lr=cfg["lr"], betas=cfg["betas"]) for m in (G, D))
    return GAN(G, D, opt_G, opt_D, make_grad_scaler(device), make_grad_scaler(device), cfg)


# --- checkpoints: one dict per run, written atomically after every epoch ---

def new_history(cfg):
    return {"n_critic": cfg["n_critic"], "d": [], "g": [], "seconds": []}


def save_gan_state(path, gan, epoch, history):
    atomic_save({"G": gan.G.state_dict(), "D": gan.D.state_dict(), "opt_G": gan.opt_G.state_dict(),
                 "opt_D": gan.opt_D.state_dict(), "scaler_G": gan.scaler_G.state_dict(),
                 "scaler_D": gan.scaler_D.state_dict(), "epoch": epoch, "history": history, "cfg": gan.cfg},
                path)


def load_gan_state(path, device, cfg=None):
    """-> (gan, last finished epoch, history). cfg=None rebuilds the run from the checkpoint's own cfg."""
    state = checked_gan_state(path, device, cfg)
    gan = build_gan(dict(state["cfg"], **(cfg or {})), device)
    for part in ("G", "D", "opt_G", "opt_D", "scaler_G", "scaler_D"):
        try:
            if part.startswith("scaler"):   # a disabled scaler (CPU, bf16 GPU) takes any state unread
                load_grad_scaler(getattr(gan, part), state[part])
            else:
                getattr(gan, part).load_state_dict(state[part])
        except (KeyError, RuntimeError, ValueError) as e:   # missing, other shapes, other parameter groups
            fail(f"{path}: its {part} does not fit this run ({type(e).__name__}); use another --out-dir")
    return gan, state["epoch"], state["history"]


def checked_gan_state(path, device, cfg=None):
    """The checkpoint at `path`, stopped with one line if it is no GAN checkpoint or (with cfg, for --resume) was
    trained with other settings: only `epochs` may change (a longer run), so the restored optimiser's lr, the
    loss history's n_critic and the config/banner all describe one run."""
    state = load_checkpoint(path, device)
    if "G" not in state or "cfg" not in state:
        fail(f"{path} is not a GAN checkpoint of these scripts")
    differ = differing_settings(state["cfg"], cfg, [key for key in cfg if key != "epochs"]) if cfg else []
    if differ:
        key, saved, value = differ[0]
        fail(f"{path} was trained with {setting(key, saved)}, not {setting(key, value) if key == 'small' else value}; "
             f"pass the same value or use another --out-dir")
    if cfg and state["epoch"] > cfg["epochs"]:   # --epochs may grow, never shrink below what is trained
        fail(f"{path} has {state['epoch']} trained epochs, more than --epochs {cfg['epochs']}; "
             f"pass --epochs {state['epoch']} or more, or use another --out-dir")
    return state


def differing_settings(saved_cfg, cfg, keys):
    """[(key, saved value, this run's value)] for the keys whose values differ (a tuple equals its list)."""
    return [(key, saved_cfg.get(key), cfg[key]) for key in keys
            if comparable(saved_cfg.get(key)) != comparable(cfg[key])]


def comparable(value):
    """betas are a tuple in a fresh cfg but may come back as a list (JSON): compare them as lists."""
    return list(value) if isinstance(value, (tuple, list)) else value


def setting(key, value):
    """A setting as a message names it: '--lr 0.0002', '--small' / 'no --small', 'betas (0.5, 0.999)'."""
    if key == "small":
        return "--small" if value else "no --small"
    return f"{FLAGS.get(key, key)} {value}"


def checkpoint_path(out, name):
    return out / f"checkpoint_{name}.pt"


def check_resumable(out, cfgs):
    """--resume: load every run's checkpoint in `out` (on the CPU, then dropped) before training any of them,
    so a checkpoint that does not fit stops the run before config.json changes (cfgs: name -> cfg).

    At least one run must have a checkpoint (as 01/02/06/07 refuse a --resume with none); a run that has
    none yet (Ctrl-C came before its first epoch finished) then starts from scratch."""
    paths = {name: checkpoint_path(out, name) for name in cfgs}
    if not any(path.is_file() for path in paths.values()):
        fail(f"--resume: no checkpoint in {out} ({', '.join(path.name for path in paths.values())}) to continue "
             f"(train first, or drop --resume)")
    for name, cfg in cfgs.items():
        if paths[name].is_file():
            load_gan_state(paths[name], torch.device("cpu"), cfg)
