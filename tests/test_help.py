"""Every --help a student runs: each flag says what it does, and no default reads "None" or "False"."""
import re

import pytest

from common import bench, judge, sampler_compare
import common.fid as fid

SCRIPTS = ["01_ddpm_mnist.py", "02_cfg_mnist.py", "03_classifier_guidance.py", "04_dcgan_wgan.py",
           "05_cgan_wgangp_fid.py", "06_faces.py", "07_afhq_cosine.py"]
TOOLS = {"bench": bench.parse_args, "sampler_compare": sampler_compare.parse_args, "judge": judge.parse_args,
         "fid": fid.parse_args}


def _help(parse, capsys):
    with pytest.raises(SystemExit) as stop:
        parse(["--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _undocumented_flags(text):
    """Flags whose option line has no help after it: '  --seed SEED' followed by the next flag or a blank."""
    lines = text.split("\n")
    options = lines[next(i for i, line in enumerate(lines) if line.endswith("options:")):]
    undocumented = []
    for line, after in zip(options, options[1:] + [""]):
        flag = re.match(r"  (--[a-z0-9-]+)( [A-Z_]+( \[[^]]+\])*)?$", line)   # nothing after the metavar
        if flag and not after.startswith(" " * 20):                          # and no wrapped help below it
            undocumented.append(flag.group(1))
    return undocumented


@pytest.mark.parametrize("name", SCRIPTS + list(TOOLS))
def test_help_documents_every_flag_and_never_says_default_none_or_false(name, capsys):
    parse = TOOLS[name] if name in TOOLS else __import__("conftest").load_script(name).parse_args
    text = _help(parse, capsys)
    assert "default: None" not in text and "default: False" not in text
    assert not re.search(r"--[a-z0-9-]*[a-z0-9]-\n", text)          # no flag split at a hyphen across lines
    assert _undocumented_flags(text) == []


def test_the_undocumented_flag_check_finds_one():
    text = "options:\n  -h, --help  show this\n  --seed SEED\n  --device DEVICE       auto, cpu\n"
    assert _undocumented_flags(text) == ["--seed"]


def _preset_argv(text, preset):
    """The flags --help lists for a preset ('--quick means: --epochs 2 --T 100.'), as an argv."""
    flat = " ".join(text.split())
    listed = re.search(rf"--{preset} means: (.*?)\.(?: --dry-run means:|$)", flat)
    return listed.group(1).split()


@pytest.mark.parametrize("preset", ["quick", "dry-run"])
@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_each_preset_as_flags_that_reproduce_it(name, preset, capsys):
    """A student who copies the flags --help lists for --quick (or --dry-run) gets the same settings."""
    parse = __import__("conftest").load_script(name).parse_args
    argv = _preset_argv(_help(parse, capsys), preset)
    with_preset, from_listed_flags = vars(parse([f"--{preset}"])), vars(parse(argv))
    for differs in (preset.replace("-", "_"), "gan_dir"):   # 05's dry run also ignores the default --gan-dir,
        with_preset.pop(differs, None)                       # which its --gan-dir help says
        from_listed_flags.pop(differs, None)
    assert from_listed_flags == with_preset
