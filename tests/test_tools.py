"""The measuring instruments of tools/: the paired statistics of tools.sampler_compare against closed forms,
simulation and exact tables; dry runs of sampler_compare and bench (the fid and fetch_inception_weights commands:
test_fid_tools.py)."""
import json

import pytest
import torch
import torch.nn as nn

from common.judge import get_judge
from common.run import save_checkpoint
from common.unets import ConditionalDenoisingUNet, DenoisingUNet
from tools import bench
from tools import sampler_compare as sc

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def judge():
    return get_judge("mnist", "unused", CPU, dry_run=True)


def error_line(capsys):
    """argparse's last stderr line, 'prog: error: ...'."""
    return capsys.readouterr().err.strip().splitlines()[-1]


# --- the paired statistics ---

def test_paired_gap_is_agresti_min_over_the_disagreeing_pairs():
    ref = torch.ones(1000, dtype=torch.bool)
    row = ref.clone()
    row[:30] = False                                     # 30 lost ...
    ref[990:] = False                                    # ... and 10 gained: Δ = −2 points, 40 discordant pairs
    gap, (lo, hi), discordant = sc.paired_gap(row, ref)
    assert gap == pytest.approx(-2.0) and discordant == 40
    # Agresti–Min by hand: 1/2 added to each cell, n + 2 = 1002 pairs
    p_lost, p_gained = 30.5 / 1002, 10.5 / 1002
    half = 1.96 * ((p_lost + p_gained - (p_gained - p_lost) ** 2) / 1002) ** 0.5
    assert (lo, hi) == pytest.approx((100 * (p_gained - p_lost - half), 100 * (p_gained - p_lost + half)))
    assert sc.paired_gap(row[:990], row[:990])[2] == 0   # the same outcomes: no information at all


def test_paired_interval_covers_the_true_gap_95_percent_of_the_time():
    """2,000 simulated comparisons of 1,000 pairs; DDIM loses 2% and gains 1% of them: the true Δ is −1 point."""
    u = torch.rand(2000, 1000, generator=torch.Generator().manual_seed(0))
    ref, row = u >= 0.01, (u < 0.01) | (u >= 0.03)       # u < .01: gained; .01 <= u < .03: lost
    covered = sum(lo <= -1.0 <= hi for lo, hi in (sc.paired_gap(r, f)[1] for r, f in zip(row, ref)))
    assert 0.93 <= covered / 2000 <= 0.97


def test_pairing_narrows_the_interval_when_failures_are_shared():
    """Both samplers fail on the same 50 x_T, DDIM on 2 more: Δ = −0.2 points, within 1 point. Unpaired, 95% against
    94.8% of 1,000 samples each is ±1.9 points wide and could not say so."""
    ref = torch.ones(1000, dtype=torch.bool)
    ref[:50] = False
    row = ref.clone()
    row[50:52] = False
    gap, (lo, hi), discordant = sc.paired_gap(row, ref)
    unpaired_half = 100 * 1.96 * (0.95 * 0.05 / 1000 + 0.948 * 0.052 / 1000) ** 0.5
    assert gap == pytest.approx(-0.2) and discordant == 2 and unpaired_half > 1.9
    assert (hi - lo) / 2 < unpaired_half / 3
    assert sc.verdict((lo, hi), discordant, 1000) == "within"


def test_bonferroni_widens_each_interval_for_several_ddim_rows():
    assert sc.bonferroni_z(1) == pytest.approx(1.959964, abs=1e-6)      # the usual two-sided 95% quantile
    assert sc.bonferroni_z(2) == pytest.approx(2.241403, abs=1e-6)      # each at 97.5%
    assert sc.bonferroni_z(3) == pytest.approx(2.393980, abs=1e-6)
    ref = torch.ones(1000, dtype=torch.bool)
    row = ref.clone()
    row[:30] = False
    (lo1, hi1), (lo2, hi2) = (sc.paired_gap(row, ref, z=sc.bonferroni_z(m))[1] for m in (1, 2))
    assert lo2 < lo1 < hi1 < hi2
    assert (hi2 - lo2) / (hi1 - lo1) == pytest.approx(sc.bonferroni_z(2) / sc.bonferroni_z(1))
    # few discordant pairs: the exact bound is taken at the widened tail too (3 of 1,000: 0.88 vs 0.97 points)
    assert sc.verdict((-0.5, 0.5), 3, 1000, limit=0.9) == "within"
    assert sc.verdict((-0.5, 0.5), 3, 1000, limit=0.9, alpha=0.025 / 2) == "unresolved"


def test_poisson_upper_bound_matches_the_exact_table():
    """One-sided 97.5% upper limits of a Poisson mean after k events (Garwood's exact limits, standard tables)."""
    assert [round(sc.poisson_upper(k), 2) for k in (0, 1, 2, 3, 5, 10)] == [3.69, 5.57, 7.22, 8.77, 11.67, 18.39]
    assert round(sc.poisson_upper(0, alpha=0.05), 3) == 2.996                 # −ln 0.05


@pytest.mark.parametrize("interval, discordant, n, expected", [
    ((-0.3, 0.6), 60, 1000, "within"),
    ((-2.5, -1.2), 60, 1000, "worse"),
    ((1.1, 2.0), 60, 1000, "better"),
    ((-1.5, 0.4), 60, 1000, "unresolved"),     # straddles −1 point
    ((-0.98, -0.02), 5, 1000, "unresolved"),   # 5 disagreements: the rate may be 11.7 / 1,000 (exact Poisson)
    ((-0.1, 0.1), 5, 10000, "within"),         # ... but not 11.7 / 10,000
    ((-10.0, 10.0), 0, 10, "unresolved"),      # ten agreeing samples decide nothing
])
def test_verdict_needs_the_whole_interval_on_one_side(interval, discordant, n, expected):
    assert sc.verdict(interval, discordant, n) == expected


# --- sampler_compare: dry runs on 01- and 02-style checkpoints ---

def tiny_checkpoint(path, script, T=12):
    """What 01_ddpm_mnist.py or 02_cfg_mnist.py saves, for an untrained width-4 UNet."""
    model = (ConditionalDenoisingUNet if script == "02_cfg_mnist" else DenoisingUNet)(hidden=4)
    save_checkpoint(path, {"script": script, "hidden": 4, "T": T, "beta_1": 1e-4, "beta_T": 0.02}, model=model)
    return str(path)


def test_dry_run_on_a_02_checkpoint(tmp_path, judge, monkeypatch):
    monkeypatch.setattr(sc, "get_judge", lambda *args, **kwargs: judge)
    ckpt = tiny_checkpoint(tmp_path / "02.pt", "02_cfg_mnist")
    rows = sc.main([ckpt, "--dry-run", "--device", "cpu", "--eta", "0", "1", "--json", str(tmp_path / "rows.json"),
                    "--grid", str(tmp_path / "grid.png")])
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddpm", 12), ("ddim η=0", 5), ("ddim η=1", 5)]   # its T
    assert rows[0]["speedup"] == 1 and rows[0]["fd_ratio"] == 1 and rows[0]["verdict"] is None   # the reference
    for r in rows:
        assert 0 <= r["judge_accuracy"] <= 1 and r["fd_judge"] >= 0 and r["seconds"] > 0
        assert sum(r["judge_digit_histogram"]) == 20 and r["comparisons"] == 2
    for r in rows[1:]:   # 20 samples cannot pin Δ to ±1 point
        assert r["verdict"] == "unresolved" and r["discordant_pairs"] >= 0 and r["accuracy_gap_ci95_points"][1] > 10
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][2]["sampler"] == "ddim η=1"
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_several_ddim_rows_widen_each_interval(judge, monkeypatch):
    """The η = 0 row is the same draw alone or beside η = 1; beside it, its interval is Bonferroni-widened."""
    monkeypatch.setattr(sc, "get_judge", lambda *args, **kwargs: judge)
    alone, both = (sc.main(["--dry-run", "--device", "cpu", "--eta", *etas])[1] for etas in (["0"], ["0", "1"]))
    assert alone["discordant_pairs"] == both["discordant_pairs"] and alone["fd_judge"] == both["fd_judge"]
    (lo1, hi1), (lo2, hi2) = alone["accuracy_gap_ci95_points"], both["accuracy_gap_ci95_points"]
    assert (hi2 - lo2) / (hi1 - lo1) == pytest.approx(sc.bonferroni_z(2) / sc.bonferroni_z(1))


def test_dry_run_on_a_01_checkpoint_is_unconditional(tmp_path, judge, monkeypatch, capsys):
    monkeypatch.setattr(sc, "get_judge", lambda *args, **kwargs: judge)
    rows = sc.main([tiny_checkpoint(tmp_path / "01.pt", "01_ddpm_mnist"), "--dry-run", "--device", "cpu"])
    assert [r["sampler"] for r in rows] == ["ddpm", "ddim η=1"]               # η = 1 is the default
    for r in rows:
        assert r["judge_accuracy"] is None and r["accuracy_gap_points"] is None and r["verdict"] is None
        assert r["fd_judge"] >= 0 and sum(r["judge_digit_histogram"]) == 20
    table = capsys.readouterr().out
    assert "unconditional" in table and "| ddim η=1 | 5 |" in table and "| — | — | — |" in table


@pytest.mark.parametrize("make, message", [
    (lambda p: tiny_checkpoint(p, "06_faces"), "is a checkpoint of 06_faces, not of 01_ddpm_mnist or 02_cfg_mnist"),
    (lambda p: save_checkpoint(p, {"script": "02_cfg_mnist", "hidden": 8, "T": 10, "beta_1": 1e-4, "beta_T": 0.02},
                               model=ConditionalDenoisingUNet(hidden=4)), "do not fit 02_cfg_mnist's UNet of width 8"),
    (lambda p: p.write_text("not a checkpoint"), "damaged or not a checkpoint"),
    (lambda p: None, "does not exist"),
])
def test_checkpoints_it_cannot_use_are_one_line_errors(tmp_path, make, message):
    make(tmp_path / "c.pt")
    with pytest.raises(SystemExit) as stop:
        sc.load_model(tmp_path / "c.pt", CPU)
    assert message in str(stop.value) and "\n" not in str(stop.value)


@pytest.mark.parametrize("argv, flag", [
    (["--eta", "0", "1.5"], "--eta"), (["--per-class", "0"], "--per-class"), (["--ddim-steps", "-5"], "--ddim-steps"),
    (["--json", "/nonexistent/rows.json"], "--json"), (["--guidance", "nan"], "--guidance"),
])
def test_bad_sampler_compare_flags_are_usage_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        sc.parse_args(argv)
    assert stop.value.code == 2 and flag in error_line(capsys)


def test_more_ddim_steps_than_t_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="--ddim-steps 20 is more than this model's T = 12"):
        sc.main([tiny_checkpoint(tmp_path / "02.pt", "02_cfg_mnist"), "--dry-run", "--ddim-steps", "20"])


# --- bench ---

def cells(text, first):
    """The cells of the one Markdown row whose first cell starts with `first`."""
    (row,) = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| " + first)]
    return [cell.strip() for cell in row]


def number(cell):
    """'1,234 (N=60,000)' -> 1234.0."""
    return float(cell.split()[0].replace(",", ""))


def test_bench_dry_run_writes_a_row_per_family(tmp_path):
    text = bench.main(["--dry-run", "--out", str(tmp_path / "rows.md")])
    assert (tmp_path / "rows.md").read_text() == text and "DRY RUN" in text and f"torch {torch.__version__}" in text
    for name, fam in bench.FAMILIES.items():
        row = cells(text, f"{name} ({fam['script']})")
        assert len(row) == 8 and row[1] == "fp32" and row[7] == "—"        # a CPU runs one mode: nothing to divide
        train, epoch = number(row[3]), number(row[4])
        assert train > 0 and epoch == pytest.approx(fam["n"] / train, rel=0.01) and f"(N={fam['n']:,})" in row[4]
        assert (row[5], row[6]) == ("—", "—") if name == "gan" else number(row[5]) > 0 and number(row[6]) > 0
    assert number(cells(text, "256×256 torch.float32 matmul")[1]) > 0
    rate, fid_seconds = number(cells(text, "FID Inception v3")[1]), number(cells(text, "FID of 10k")[1])
    assert rate > 0 and fid_seconds == pytest.approx(20_000 / rate, rel=0.01)


def test_bench_ratios_divide_by_the_plain_row():
    args = bench.parse_args(["--dry-run"])
    args.steps, args.sample_batch, args.sample_timed_steps = 1, 4, 3
    fam = dict(bench.FAMILIES["cfg"], **bench.DRY_RUN)
    _, plain = bench.bench_family("cfg", fam, args, CPU, optimised=False)
    row, fast = bench.bench_family("cfg", fam, args, CPU, optimised=True, plain=plain)
    ratios = [float(part.strip(" ×")) for part in row.strip("| ").split(" | ")[-1].split("/")]
    assert ratios == pytest.approx([round(fast[k] / plain[k], 2) for k in ("train", "ddpm", "ddim")], abs=0.006)


class Probe(nn.Module):
    """A conv that records the layout and dtype it is given."""

    def __init__(self):
        super().__init__()
        self.conv, self.seen = nn.Conv2d(3, 4, 3), None

    def forward(self, x, scale):
        self.seen = (x.is_contiguous(), torch.is_autocast_enabled("cpu"))
        return self.conv(x) * scale


def test_plain_runs_the_net_in_fp32_nchw_inside_autocast():
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    probe = Probe().to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert probe(x, 2.0).dtype == torch.bfloat16 and probe.seen == (False, True)    # as the scripts run it
        plain = bench.Plain(probe)
        assert plain(x, 2.0).dtype == torch.float32 and probe.seen == (True, False)
    assert probe.conv.weight.is_contiguous()                                           # its weights NCHW again


def test_bench_out_into_a_missing_folder_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(["--out", "/nonexistent/rows.md"])
    assert stop.value.code == 2 and "--out" in error_line(capsys)
