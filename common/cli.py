"""The argparse flags the diffusion scripts share, spelled the same everywhere (STYLE.md item 2),
and the argparse types every script uses."""
import argparse
import textwrap

# the judges and the real-data FID statistics are shared by every script, so they stay where they are
OUT_DIR_HELP = "default: results/<script name>/, and its dry-run/ for a --dry-run (the cached judges and " \
               "real-data FID statistics stay in results/judge/ and results/fid_stats/)"
HANDOUT_SAMPLE_EPOCHS = [1, 5, 10, 15, 20]   # Handout D §2.3 (and §3.3): sample grids after these epochs


# --- argparse types: a bad value is a one-line usage error, e.g. '--epochs -3' ---

def positive_int(text):
    """argparse type: an integer >= 1 (so '--epochs -3' is a one-line error)."""
    value = int(text)
    if value < 1:
        raise ValueError
    return value


positive_int.__name__ = "positive integer"


def positive_float(text):
    """argparse type: a finite number > 0 (learning rates, clipping values)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError
    return value


positive_float.__name__ = "positive number"


def finite_float(text):
    """argparse type: any finite number (guidance scales may be negative; nan and inf are typos)."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError
    return value


finite_float.__name__ = "finite number"


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise ValueError
    return value


non_negative_int.__name__ = "non-negative integer"


def existing_parent(text):
    """argparse type: an output file whose folder exists (checked before hours of work, not after)."""
    from pathlib import Path
    if not Path(text).parent.is_dir():
        raise ValueError
    return text


existing_parent.__name__ = "file path in an existing folder"


def non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise ValueError
    return value


non_negative_float.__name__ = "non-negative number"


def probability(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError
    return value


probability.__name__ = "probability in [0, 1]"


def unit_interval(text):
    """argparse type: DDIM's η, a number in [0, 1]."""
    return probability(text)


unit_interval.__name__ = "number in [0, 1]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """'(default: X)' after each flag's help, except for on/off switches (default False) and where the default
    is None: such a help says in words what its default is (--eval-batch: 1,000 on CUDA, 100 on CPU)."""

    def _get_help_string(self, action):
        # the one method ArgumentDefaultsHelpFormatter itself overrides; argparse documents no public hook for this
        plain = action.default is None or action.default is False
        return action.help if plain else super()._get_help_string(action)

    # Text is wrapped between words only: a flag such as --save-and-sample-every named in a help, the
    # description or the preset list is never split at its hyphens (argparse's own wrapping splits it).
    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)


def diffusion_parser(description, epochs=20, batch_size=128, lr=1e-3, hidden=64, T=300,
                     data_help="torchvision dataset root"):
    """Parser with the shared training flags. T, β_1, β_T and the epochs are Handout D §2.2–2.3's; width,
    batch and learning rate stand in for its starter notebook's "default hyperparameters" (not included)."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=epochs, help="training epochs")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help="images per step")
    p.add_argument("--lr", type=positive_float, default=lr, help="Adam learning rate")
    p.add_argument("--lr-decay-to", type=float, default=0.1,
                   help="exponential LR decay, once per epoch: epoch e+1 runs at lr × this^(e/epochs)")
    p.add_argument("--hidden", type=positive_int, default=hidden, help="UNet width D")
    p.add_argument("--T", type=positive_int, default=T, help="diffusion steps")
    p.add_argument("--beta-1", type=float, default=1e-4, help="β_1 of the linear schedule")
    p.add_argument("--beta-T", type=float, default=0.02, help="β_T of the linear schedule")
    p.add_argument("--sample-epochs", type=positive_int, nargs="+", default=list(HANDOUT_SAMPLE_EPOCHS),
                   help="epochs after which a sample grid is drawn (same noise each time); the default list "
                        "goes on every 5 epochs and always ends with --epochs; a given epoch beyond it is an error")
    add_sampler_flags(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the weights, the data order and every noise draw")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default="data", help=data_help)
    p.add_argument("--out-dir", default=None, help=OUT_DIR_HELP)
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/checkpoint.pt")
    p.add_argument("--quick", action="store_true", help="laptop-CPU preset (its flags are listed at the end of --help)")
    p.add_argument("--dry-run", action="store_true",
                   help="seconds: synthetic data, tiny model, every output file written")
    return p


def add_sampler_flags(p):
    """--sampler, --sample-steps, --eta (01, 02, 06, 07): the handout's ancestral sampler, or DDIM (beyond it)."""
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm",
                   help="ddpm = the handout's Algorithm 2/4 (T steps); ddim = Song et al. 2021 (fewer steps)")
    p.add_argument("--sample-steps", type=positive_int, default=50, help="model calls per DDIM sample")
    p.add_argument("--eta", type=unit_interval, default=0.0,
                   help="DDIM η: 0 deterministic, 1 fresh noise each step like the ancestral sampler (on MNIST "
                        "at T = 300, 1 matched it and 0 did not: BENCHMARKS.md)")


def check_sampler_args(parser, args):
    if args.sampler == "ddim" and args.sample_steps > args.T:
        parser.error(f"--sample-steps {args.sample_steps} is more than --T {args.T}")


def parse_with_presets(parser, argv, quick, dry_run, check=None):
    """Parse argv with --quick / --dry-run presets as defaults: a flag given on the command line wins.

    `check(parser, args)` then rejects values argparse's types cannot catch alone. --help lists both presets.
    """
    presets = f"--quick means: {preset_flags(quick)}.  --dry-run means: {preset_flags(dry_run)}."
    parser.epilog = f"{parser.epilog}  {presets}" if parser.epilog else presets
    args = parser.parse_args(argv)
    if args.quick and args.dry_run:
        parser.error("--quick and --dry-run are two presets (a short real run, a synthetic smoke run): pass one")
    if args.quick or args.dry_run:
        parser.set_defaults(**(quick if args.quick else {}))
        parser.set_defaults(**(dry_run if args.dry_run else {}))
        args = parser.parse_args(argv)                            # explicit flags override the presets
    if check is not None:
        check(parser, args)
    if "sample_epochs" in vars(args):   # given on the command line? argparse leaves a preset attribute alone
        given = parser.parse_args(argv, argparse.Namespace(sample_epochs=None)).sample_epochs is not None
        check_sample_epochs(parser, args, given)
    return args


def preset_flags(preset):
    """A preset as its flags: {'epochs': 2, 'sample_epochs': [1, 2]} -> '--epochs 2 --sample-epochs 1 2'."""
    return " ".join(f"--{name.replace('_', '-')} {flag_value(value)}" for name, value in preset.items())


def flag_value(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def check_sample_epochs(parser, args, given):
    """A grid asked for after an epoch that never comes is an error. The default or a preset's list is cut
    to --epochs, which always has its grid, and the handout's default list goes on every 5 epochs:
    `--epochs 7` draws after epochs 1, 5 and 7; `--epochs 32` after 1, 5, ..., 25, 30 and 32;
    `--quick --epochs 4` after 1, 2 and 4. A list given on the command line is kept as it is."""
    beyond = [epoch for epoch in args.sample_epochs if epoch > args.epochs]
    if beyond and given:
        parser.error(f"--sample-epochs {' '.join(map(str, beyond))} is beyond --epochs {args.epochs}: "
                     f"no grid would be drawn; pass epochs up to {args.epochs}")
    if not given:
        onward = range(25, args.epochs, 5) if args.sample_epochs == HANDOUT_SAMPLE_EPOCHS else []
        listed = sorted(set(args.sample_epochs) | set(onward))
        args.sample_epochs = [epoch for epoch in listed if epoch < args.epochs] + [args.epochs]


def check_schedule_args(parser, args):
    if not 0 < args.beta_1 <= args.beta_T < 1:
        parser.error(f"need 0 < --beta-1 <= --beta-T < 1, got {args.beta_1} and {args.beta_T}")
    check_sampler_args(parser, args)
    if not 0 < args.lr_decay_to <= 1:
        parser.error(f"--lr-decay-to must be in (0, 1], got {args.lr_decay_to}")
