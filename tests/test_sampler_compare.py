"""`python -m common.sampler_compare` (issue 8): DDIM against DDPM on one 02 model, rows that make sense."""
import json

import numpy as np

import pytest
import torch

from common import sampler_compare
from common.data import synthetic_dataset
from common.judge import get_judge
from common.schedules import ddpm_schedule
from common.unet import ConditionalDenoisingUNet, DenoisingUNet


def test_dry_run_compares_ddim_with_ddpm(tmp_path):
    rows = sampler_compare.main(["--dry-run", "--device", "cpu", "--eta", "0", "1",
                                 "--json", str(tmp_path / "rows.json"), "--grid", str(tmp_path / "grid.png")])
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 10), ("ddim η=0", 5), ("ddim η=1", 5)]
    assert rows[0]["speedup"] == 1 and rows[0]["accuracy_gap_points"] == 0 and rows[0]["fd_ratio"] == 1
    assert rows[0]["accuracy_gap_ci95_points"] == 0 and rows[0]["within_1_point"] is None   # DDPM is the reference
    assert all(r["within_1_point"] in ("within", "outside", "unresolved") for r in rows[1:])
    for r in rows:
        assert 0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["seconds"] > 0
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][1]["steps"] == 5
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "grid.png").stat().st_size > 5000


def test_paired_gap_against_the_hand_computed_interval():
    ref = torch.ones(1000, dtype=torch.bool)
    row = ref.clone()
    row[:10] = False                                     # 10 of 1,000 lost: Δ = −1 point
    gap, half = sampler_compare.paired_gap(row, ref)
    p, n = 0.01, 1000                                    # d_i = −1 for 1% of samples, else 0
    sd = (n * p * (1 - p) / (n - 1)) ** 0.5              # sample standard deviation of d
    assert gap == pytest.approx(-1.0) and half == pytest.approx(100 * 1.96 * sd / n ** 0.5)
    assert sampler_compare.paired_gap(ref, ref) == (0.0, 0.0)


def test_pairing_narrows_the_interval_when_failures_are_shared():
    """Both samplers fail on the same 50 x_T, DDIM on 2 more: Δ = −0.2 points, known to about ±0.3
    (an unpaired comparison of 95% vs 94.8% over 1,000 samples each would give ±1.9)."""
    ref = torch.ones(1000, dtype=torch.bool)
    ref[:50] = False
    row = ref.clone()
    row[50:52] = False
    gap, half = sampler_compare.paired_gap(row, ref)
    assert gap == pytest.approx(-0.2) and half < 0.3
    assert sampler_compare.verdict(gap, half) == "within"


@pytest.mark.parametrize("gap, half, expected", [(0.2, 0.5, "within"), (-0.5, 0.5, "within"), (-2.0, 0.5, "outside"),
                                                 (0.8, 0.5, "unresolved"), (-1.2, 1.6, "unresolved")])
def test_verdict_needs_the_whole_interval_on_one_side(gap, half, expected):
    assert sampler_compare.verdict(gap, half) == expected


def test_loads_a_02_checkpoint_and_rejects_others(tmp_path):
    model = ConditionalDenoisingUNet(hidden=4)
    args = {"hidden": 4, "T": 20, "beta_1": 1e-4, "beta_T": 0.02, "p_uncond": 0.1, "epochs": 1}
    torch.save({"model": model.state_dict(), "args": args}, tmp_path / "ok.pt")
    loaded, sched, _ = sampler_compare.load_model(tmp_path / "ok.pt", torch.device("cpu"))
    assert sched.T == 20 and torch.isclose(sched.beta[20], torch.tensor(0.02))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    torch.save({"model": {}, "args": {"hidden": 4}}, tmp_path / "foreign.pt")   # e.g. 01's checkpoint
    with pytest.raises(SystemExit, match="not a checkpoint of 02_cfg_mnist.py or"):
        sampler_compare.load_model(tmp_path / "foreign.pt", torch.device("cpu"))


def test_loads_an_01_checkpoint_as_unconditional(tmp_path):
    model = DenoisingUNet(hidden=4)
    args = {"hidden": 4, "T": 20, "beta_1": 1e-4, "beta_T": 0.02, "epochs": 3, "n_samples": 1000}
    torch.save({"model": model.state_dict(), "args": args, "epoch": 2}, tmp_path / "01.pt")
    loaded, sched, trained = sampler_compare.load_model(tmp_path / "01.pt", torch.device("cpu"))
    assert type(loaded) is DenoisingUNet and trained["epochs_done"] == 2 and sched.T == 20
    torch.save({"model": ConditionalDenoisingUNet(hidden=8).state_dict(), "args": {**args, "p_uncond": 0.1}},
               tmp_path / "wrong_width.pt")                      # the weights do not fit the named model
    with pytest.raises(SystemExit, match="not a checkpoint of 02_cfg_mnist.py or 01_ddpm_mnist.py"):
        sampler_compare.load_model(tmp_path / "wrong_width.pt", torch.device("cpu"))


def test_unconditional_rows_have_fd_and_histogram_but_no_accuracy():
    torch.manual_seed(0)
    args = sampler_compare.parse_args(["--per-digit", "2", "--ddim-steps", "5", "--eta", "0", "--batch", "8"])
    judge = get_judge("mnist", "unused", torch.device("cpu"), dry_run=True)
    x_test = synthetic_dataset(64, torch.device("cpu"), seed=1)[0]
    model = DenoisingUNet(hidden=4).eval()
    with torch.no_grad():
        rows, firsts = sampler_compare.compare(args, model, ddpm_schedule(10), judge, x_test, torch.device("cpu"),
                                               conditional=False)
    assert [r["sampler"] for r in rows] == ["ddpm", "ddim η=0"]
    assert firsts.shape == (2, 10, 28, 28) and firsts.dtype == np.uint8        # the grid: a row per sampler
    for r in rows:
        assert r["judge_accuracy"] is None and r["accuracy_gap_points"] is None and r["fd_judge"] >= 0
        assert sum(r["judge_digit_histogram"]) == 20 and len(r["judge_digit_histogram"]) == 10
    text = sampler_compare.table(rows, 20, 5.0, "cpu", conditional=False)
    assert "unconditional" in text and "| — | — |" in text


@pytest.mark.parametrize("argv", [["--eta", "0", "1.5"], ["--per-digit", "0"], ["--ddim-steps", "-5"]])
def test_bad_arguments_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        sampler_compare.parse_args(argv)
    assert stop.value.code == 2 and argv[0] in capsys.readouterr().err.strip().splitlines()[-1]   # the error line
