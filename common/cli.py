"""The command line of every script: value types, the shared flags (spelled the same everywhere), and the
--quick / --dry-run presets, which set defaults that flags given on the command line still override."""
import argparse
import re
import sys
import textwrap

HANDOUT_SAMPLE_EPOCHS = [1, 5, 10, 15, 20]   # Handout D §2.3 (and §3.3): sample grids after these epochs
MAX_SCALE = 1e4                              # |γ| and s beyond this only make NaN samples


# --- value types: a bad value is a one-line usage error ('--epochs -3', '--lr -1e-3') ---

class Typed:
    """An argparse type: convert the text, then check the value; a bad one is argparse's one-line usage error
    "invalid <name> value: '...'" (argparse reads the type's __name__)."""

    def __init__(self, name, convert, ok):
        self.__name__, self.convert, self.ok = name, convert, ok

    def __call__(self, text):
        value = self.convert(text)
        if not self.ok(value):
            raise ValueError
        return value


positive_int = Typed("positive integer", int, lambda v: v >= 1)
positive_float = Typed("positive number", float, lambda v: 0 < v < float("inf"))
unit_interval = Typed("number in [0, 1]", float, lambda v: 0 <= v <= 1)
seed = Typed("seed in 0..2^31 − 1", int, lambda v: 0 <= v < 2 ** 31)
scale = Typed(f"guidance scale with |value| <= {MAX_SCALE:g}", float, lambda v: abs(v) <= MAX_SCALE)
non_negative_scale = Typed(f"guidance scale in [0, {MAX_SCALE:g}]", float, lambda v: 0 <= v <= MAX_SCALE)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """'(default: X)' after each flag's help, except for switches and None defaults (their help says it in
    words); text wraps between words only, so a flag such as --save-and-sample-every is never split."""

    def _get_help_string(self, action):
        plain = action.default is None or action.default is False
        return action.help if plain else super()._get_help_string(action)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)


def make_parser(doc):
    """A parser described by the first line of a script's docstring."""
    p = argparse.ArgumentParser(description=doc.strip().split("\n")[0], formatter_class=HelpFormatter)
    # argparse reads '-1e-3' or '-inf' as an option, not a value; this makes '--lr -1e-3' reach its type check
    p._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)
    return p


def add_run_flags(p, data_dir="data", data_help="torchvision dataset root (MNIST, Fashion-MNIST)"):
    """--seed --device --data-dir --out-dir --resume --overwrite --quick --dry-run."""
    p.add_argument("--seed", type=seed, default=0, help="seeds the weights, the data order and every noise draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default=data_dir, help=data_help)
    p.add_argument("--out-dir", default=None,
                   help="default: results/<script>/, results/<script>_quick/ with --quick, results/<script>_dry_run/ "
                        "with --dry-run")
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in the output folder")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a folder that holds an earlier run")
    p.add_argument("--quick", action="store_true", help="laptop-CPU preset (its flags are listed at the end)")
    p.add_argument("--dry-run", action="store_true", help="seconds: synthetic data, tiny models, every output file")


def add_training_flags(p, epochs, batch_size, lr, hidden, hidden_help="UNet width D", lr_help="learning rate"):
    """--epochs --batch-size --lr --hidden."""
    p.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=lr, help=lr_help)
    p.add_argument("--hidden", type=positive_int, default=hidden, help=hidden_help)


def add_diffusion_flags(p, T):
    """The schedule (Handout D §2.2), the learning-rate decay, the grids, and the sampler (01, 02, 06)."""
    p.add_argument("--lr-decay-to", type=unit_interval, default=0.1,
                   help="the learning rate decays exponentially, once per epoch, to about lr × this")
    p.add_argument("--T", type=positive_int, default=T, help="diffusion steps")
    p.add_argument("--beta-1", type=float, default=1e-4, help="β_1 of the linear schedule")
    p.add_argument("--beta-T", type=float, default=0.02, help="β_T of the linear schedule")
    p.add_argument("--sample-epochs", type=positive_int, nargs="+", default=list(HANDOUT_SAMPLE_EPOCHS),
                   help="epochs after which a grid is drawn from the same noise; the default goes on every 5 "
                        "epochs and always ends with --epochs")
    add_sampler_flags(p)


def add_sampler_flags(p):
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm",
                   help="ddpm: the handout's ancestral sampler (T steps); ddim: Song et al. 2021 (fewer steps)")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="model calls per DDIM sample")
    p.add_argument("--eta", type=unit_interval, default=1.0,
                   help="DDIM η: 1 adds fresh noise each step like the ancestral sampler, and stayed close to it on "
                        "MNIST; 0 is deterministic, and fell behind (BENCHMARKS.md)")
    p.add_argument("--sample-batch", type=positive_int, default=None,
                   help="samples computed in one pass (default: 1,000 on CUDA, 100 on a CPU, where big batches are "
                        "slower); it changes speed and memory only. Handout D's eval_batch_size is --n-grid")


def parse(p, argv, quick, dry_run, check=None):
    """Parse argv with the --quick or --dry-run preset as defaults (--help lists both); then one-line usage
    errors for what the types alone cannot catch, and `check(p, args)` for a script's own rules."""
    argv = sys.argv[1:] if argv is None else list(argv)   # what was typed decides, e.g., --sample-epochs below
    presets = f"--quick means: {as_flags(quick)}.  --dry-run means: {as_flags(dry_run)}."
    p.epilog = f"{p.epilog}  {presets}" if p.epilog else presets
    args = p.parse_args(argv)
    if args.quick and args.dry_run:
        p.error("--quick and --dry-run are two presets (a short real run, a synthetic smoke run): pass one")
    if args.quick or args.dry_run:
        p.set_defaults(**(quick if args.quick else dry_run))
        args = p.parse_args(argv)                         # flags given on the command line win
    for name, value in vars(args).items():                # one rule for every list of choices: no value twice
        if isinstance(value, list) and len(set(value)) < len(value) and name != "dim_mults":   # 1 1 2 2: a shape
            p.error(f"--{name.replace('_', '-')} lists a value twice: {' '.join(map(str, value))}")
    if "beta_1" in vars(args):
        check_diffusion_args(p, args, argv)
    if check is not None:
        check(p, args)
    return args


def as_flags(preset):
    """{'epochs': 2, 'sample_epochs': [1, 2]} -> '--epochs 2 --sample-epochs 1 2'."""
    return " ".join(f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, list) else str(v))
                    for k, v in preset.items())


def check_diffusion_args(p, args, argv):
    if not 0 < args.beta_1 <= args.beta_T < 1:
        p.error(f"need 0 < --beta-1 <= --beta-T < 1, got {args.beta_1} and {args.beta_T}")
    if args.sampler == "ddim" and args.sample_steps > args.T:
        p.error(f"--sample-steps {args.sample_steps} is more than --T {args.T}")
    if args.lr_decay_to == 0:
        p.error("--lr-decay-to must be above 0")
    if any(a == "--sample-epochs" or a.startswith("--sample-epochs=") for a in argv):
        beyond = [e for e in args.sample_epochs if e > args.epochs]
        if beyond:
            p.error(f"--sample-epochs {' '.join(map(str, beyond))} is beyond --epochs {args.epochs}")
        return
    # the default list goes on every 5 epochs and ends with --epochs: --epochs 7 draws after 1, 5 and 7
    onward = range(25, args.epochs, 5) if args.sample_epochs == HANDOUT_SAMPLE_EPOCHS else []
    listed = sorted(set(args.sample_epochs) | set(onward))
    args.sample_epochs = [e for e in listed if e < args.epochs] + [args.epochs]
