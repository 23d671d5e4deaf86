"""common/parts.py: long loops saved part by part, reused only under exactly the same key."""
import importlib.util
from pathlib import Path

import torch

from common import blocks, samplers, schedules, unet

from common.parts import load_part, save_part, source_hash, state_hash
from common.unet import DenoisingUNet


def test_a_part_is_reused_only_under_the_same_key(tmp_path, capsys):
    path = tmp_path / "parts" / "gamma_5.pt"
    assert load_part(path, {"weights": "abc"}) is None                       # nothing saved yet
    saved = save_part(path, {"weights": "abc", "guidance": 5.0}, torch.arange(3.0))
    assert torch.equal(load_part(path, {"weights": "abc", "guidance": 5.0}), saved)
    assert "reusing" in capsys.readouterr().out
    assert load_part(path, {"weights": "xyz", "guidance": 5.0}) is None      # other weights: made again
    assert "other inputs" in capsys.readouterr().out


def test_a_damaged_part_is_made_again_not_trusted(tmp_path, capsys):
    path = tmp_path / "s_1.pt"
    path.write_bytes(b"half a file")
    assert load_part(path, {"k": 1}) is None and "unreadable" in capsys.readouterr().out
    save_part(path, {"k": 1}, {"samples": torch.ones(2), "seconds": 3.5})
    assert load_part(path, {"k": 1})["seconds"] == 3.5


def test_a_file_without_a_value_is_made_again(tmp_path):
    """An older layout with the right key but no "value" (e.g. 07's first AFHQ caches) is not trusted."""
    path = tmp_path / "old.pt"
    torch.save({"key": [1, 2], "images": torch.ones(1)}, path)
    assert load_part(path, [1, 2]) is None


def test_state_hash_names_the_weights_bit_for_bit():
    torch.manual_seed(0)
    a, b = DenoisingUNet(hidden=4), DenoisingUNet(hidden=4)
    assert state_hash(a) != state_hash(b)
    b.load_state_dict(a.state_dict())
    assert state_hash(a) == state_hash(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert state_hash(a) != state_hash(b)


def _module_with(folder, body, name):
    """A source file the test can edit: folder/<name>.py holding `def step(x): return <body>`, imported."""
    path = folder / f"{name}.py"
    path.write_text(f"def step(x):\n    return {body}\n")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_source_hash_changes_when_the_code_is_edited(tmp_path):
    original = _module_with(tmp_path, "x - 1", "a")
    same = _module_with(tmp_path, "x - 1", "b")                                  # the same code in another file
    edited = _module_with(tmp_path, "x - 2", "c")
    assert source_hash(original) == source_hash(same) == source_hash(same.step)
    assert source_hash(original) != source_hash(edited)
    assert source_hash(state_hash, source_hash) != source_hash(source_hash, state_hash)
    assert source_hash(tmp_path / "a.py") == source_hash(original)              # a path: the file's bytes


def test_the_scripts_hash_their_code_when_loaded(script, tmp_path):
    """The key's code hash is a module constant, taken at import (the code that runs, even if a file
    changes later), over the script itself and the common/ modules that draw its samples."""
    m = script("02_cfg_mnist.py")
    assert m.SWEEP_CODE == source_hash(Path(m.__file__), blocks, samplers, schedules, unet)
    assert script("03_classifier_guidance.py").SWEEP_CODE != m.SWEEP_CODE
