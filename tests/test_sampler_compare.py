"""`python -m common.sampler_compare` (issue 8): DDIM against DDPM on one 02 model, rows that make sense."""
import json

import pytest
import torch

from common import sampler_compare
from common.unet import ConditionalDenoisingUNet


def test_dry_run_compares_ddim_with_ddpm(tmp_path):
    rows = sampler_compare.main(["--dry-run", "--device", "cpu", "--eta", "0", "1",
                                 "--json", str(tmp_path / "rows.json")])
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 10), ("ddim η=0", 5), ("ddim η=1", 5)]
    assert rows[0]["speedup"] == 1 and rows[0]["accuracy_gap_points"] == 0 and rows[0]["fd_ratio"] == 1
    for r in rows:
        assert 0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["seconds"] > 0
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][1]["steps"] == 5


def test_loads_a_02_checkpoint_and_rejects_others(tmp_path):
    model = ConditionalDenoisingUNet(hidden=4)
    args = {"hidden": 4, "T": 20, "beta_1": 1e-4, "beta_T": 0.02, "p_uncond": 0.1, "epochs": 1}
    torch.save({"model": model.state_dict(), "args": args}, tmp_path / "ok.pt")
    loaded, sched, _ = sampler_compare.load_model(tmp_path / "ok.pt", torch.device("cpu"))
    assert sched.T == 20 and torch.isclose(sched.beta[20], torch.tensor(0.02))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    torch.save({"model": {}, "args": {"hidden": 4}}, tmp_path / "foreign.pt")   # e.g. 01's checkpoint
    with pytest.raises(SystemExit, match="not a checkpoint of 02_cfg_mnist.py"):
        sampler_compare.load_model(tmp_path / "foreign.pt", torch.device("cpu"))
