"""`python -m common.sampler_compare` (issue 8): DDIM against DDPM on one 02 model, rows that make sense;
and common/stats.py, the paired interval for the accuracy gap behind its verdict."""
import json

import numpy as np

import pytest
import torch

from common import sampler_compare, stats
from common.data import synthetic_dataset
from common.judge import get_judge
from common.schedules import ddpm_schedule
from common.unet import ConditionalDenoisingUNet, DenoisingUNet


def test_dry_run_compares_ddim_with_ddpm(tmp_path):
    rows = sampler_compare.main(["--dry-run", "--device", "cpu", "--eta", "0", "1",
                                 "--json", str(tmp_path / "rows.json"), "--grid", str(tmp_path / "grid.png")])
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 10), ("ddim η=0", 5), ("ddim η=1", 5)]
    assert rows[0]["speedup"] == 1 and rows[0]["accuracy_gap_points"] == 0 and rows[0]["fd_ratio"] == 1
    assert rows[0]["accuracy_gap_ci95_points"] is None and rows[0]["within_1_point"] is None   # the reference
    assert all(r["within_1_point"] != "within" for r in rows[1:])   # 20 samples cannot pin Δ to ±1 point
    for r in rows:
        assert 0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["seconds"] > 0
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][1]["steps"] == 5
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "grid.png").stat().st_size > 5000


def test_paired_gap_counts_the_disagreeing_pairs():
    ref = torch.ones(1000, dtype=torch.bool)
    row = ref.clone()
    row[:10] = False                                     # 10 lost ...
    ref[990:] = False                                    # ... and 10 gained: Δ = 0, from 20 discordant pairs
    gap, (lo, hi), discordant = stats.paired_gap(row, ref)
    assert gap == 0 and discordant == 20 and lo == pytest.approx(-hi)
    # Agresti–Min by hand: 10.5 / 1002 each way, so the variance is (21 / 1002) / 1002
    assert hi == pytest.approx(100 * 1.96 * (21 / 1002 / 1002) ** 0.5)


def test_paired_interval_covers_the_true_gap_95_percent_of_the_time():
    """2,000 simulated comparisons of 1,000 pairs; DDIM loses 2% and gains 1% of them: true Δ = −1 point."""
    g = torch.Generator().manual_seed(0)
    covered = 0
    for _ in range(2000):
        u = torch.rand(1000, generator=g)
        ref, row = u >= 0.01, (u < 0.01) | (u >= 0.03)     # u < .01: gained; .01 ≤ u < .03: lost
        lo, hi = stats.paired_gap(row, ref)[1]
        covered += lo <= -1.0 <= hi
    assert 0.93 <= covered / 2000 <= 0.97


def test_pairing_narrows_the_interval_when_failures_are_shared():
    """Both samplers fail on the same 50 x_T, DDIM on 2 more: Δ = −0.2 points, within 1 point (an unpaired
    comparison of 95% vs 94.8% over 1,000 samples each could not say so: ±1.9 points)."""
    ref = torch.ones(1000, dtype=torch.bool)
    ref[:50] = False
    row = ref.clone()
    row[50:52] = False
    gap, interval, discordant = stats.paired_gap(row, ref)
    assert gap == pytest.approx(-0.2) and discordant == 2
    assert stats.verdict(interval, discordant, 1000) == "within"


def test_ten_agreeing_samples_decide_nothing():
    same = torch.tensor([True] * 9 + [False])
    gap, interval, discordant = stats.paired_gap(same, same)
    assert gap == 0 and discordant == 0 and interval[1] > 10         # Agresti–Min stays wide
    assert stats.verdict(interval, discordant, 10) == "unresolved"


@pytest.mark.parametrize("interval, discordant, n, expected", [
    ((-0.3, 0.6), 60, 1000, "within"),
    ((-2.5, -1.2), 60, 1000, "worse"),
    ((1.1, 2.0), 60, 1000, "better"),
    ((-1.5, 0.4), 60, 1000, "unresolved"),
    ((-0.98, -0.02), 5, 1000, "unresolved"),   # 5 disagreements: the rate may be 11.7 / 1,000 (exact Poisson)
    ((-0.1, 0.1), 5, 10000, "within"),         # ... but not 11.7 / 10,000
])
def test_verdict_needs_the_whole_interval_on_one_side(interval, discordant, n, expected):
    assert stats.verdict(interval, discordant, n) == expected


def test_poisson_upper_bound_matches_the_exact_table():
    """97.5% one-sided upper limits of a Poisson mean after 0, 1, 5 events (standard tables)."""
    assert [round(stats.poisson_upper(k), 2) for k in (0, 1, 5)] == [3.69, 5.57, 11.67]


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
        assert r["within_1_point"] is None and r["discordant_pairs"] is None
        assert sum(r["judge_digit_histogram"]) == 20 and len(r["judge_digit_histogram"]) == 10
    text = sampler_compare.table(rows, 20, 5.0, "cpu", conditional=False)
    assert "unconditional" in text and "| — | — |" in text


@pytest.mark.parametrize("argv", [["--eta", "0", "1.5"], ["--per-digit", "0"], ["--ddim-steps", "-5"]])
def test_bad_arguments_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        sampler_compare.parse_args(argv)
    assert stop.value.code == 2 and argv[0] in capsys.readouterr().err.strip().splitlines()[-1]   # the error line


def test_bonferroni_widens_the_interval_for_several_ddim_rows():
    assert stats.bonferroni_z(1) == pytest.approx(1.959964, abs=1e-6)     # the usual 95% two-sided quantile
    assert stats.bonferroni_z(2) == pytest.approx(2.241403, abs=1e-6)     # 97.5% each: 1 − 0.05/2
    ref = torch.ones(1000, dtype=torch.bool)
    row = ref.clone()
    row[:30] = False                                                       # 30 lost pairs, 0 gained
    (lo1, hi1), (lo2, hi2) = (stats.paired_gap(row, ref, z=stats.bonferroni_z(m))[1] for m in (1, 2))
    assert lo2 < lo1 < hi1 < hi2
    # few discordant pairs: the exact bound is taken at the adjusted tail too (3 of 1,000: 0.88 vs 0.97 points)
    assert stats.verdict((-0.5, 0.5), 3, 1000, limit=0.9) == "within"
    assert stats.verdict((-0.5, 0.5), 3, 1000, limit=0.9, alpha=0.025 / 2) == "unresolved"


def test_several_ddim_rows_widen_each_interval():
    """The η = 0 row is the same draw alone or beside η = 1; beside it, its interval is Bonferroni-widened."""
    alone, both = (sampler_compare.main(["--dry-run", "--device", "cpu", "--eta", *etas])[1]
                   for etas in (["0"], ["0", "1"]))
    assert alone["discordant_pairs"] == both["discordant_pairs"]
    assert (alone["comparisons"], both["comparisons"]) == (1, 2)
    (lo1, hi1), (lo2, hi2) = alone["accuracy_gap_ci95_points"], both["accuracy_gap_ci95_points"]
    assert (hi2 - lo2) / (hi1 - lo1) == pytest.approx(stats.bonferroni_z(2) / stats.bonferroni_z(1))

