"""common/parts.py: long sampling loops saved part by part, reused only under exactly the same key."""
import torch

from common.parts import reuse_or_compute, saved_part, state_hash
from common.unet import DenoisingUNet


def test_a_part_is_computed_once_per_key(tmp_path, capsys):
    path, calls = tmp_path / "parts" / "gamma_5.pt", []

    def compute():
        calls.append(1)
        return torch.arange(len(calls) * 3.0)          # a different value on every call

    first = reuse_or_compute(path, {"weights": "abc", "guidance": 5.0}, compute)
    again = reuse_or_compute(path, {"weights": "abc", "guidance": 5.0}, compute)
    assert len(calls) == 1 and torch.equal(first, again) and "reusing" in capsys.readouterr().out
    other = reuse_or_compute(path, {"weights": "xyz", "guidance": 5.0}, compute)   # other weights: drawn again
    assert len(calls) == 2 and len(other) == 6
    assert saved_part(path, {"weights": "abc", "guidance": 5.0}) is None          # ... and it replaced the part


def test_a_damaged_part_is_drawn_again_not_trusted(tmp_path):
    path = tmp_path / "s_1.pt"
    path.write_bytes(b"half a file")
    assert saved_part(path, {"k": 1}) is None
    assert reuse_or_compute(path, {"k": 1}, lambda: {"samples": torch.ones(2), "seconds": 3.5})["seconds"] == 3.5
    assert saved_part(path, {"k": 1})["seconds"] == 3.5


def test_state_hash_names_the_weights_bit_for_bit():
    torch.manual_seed(0)
    a, b = DenoisingUNet(hidden=4), DenoisingUNet(hidden=4)
    assert state_hash(a) != state_hash(b)
    b.load_state_dict(a.state_dict())
    assert state_hash(a) == state_hash(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert state_hash(a) != state_hash(b)
