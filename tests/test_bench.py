"""Smoke test of the benchmark (issue 8): `python -m common.bench --dry-run` in seconds, rows that parse."""
import pytest
import torch

from common import bench, bench_families


def table_rows(text, first_cell):
    """The cells of every markdown row whose first cell starts with `first_cell`."""
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    return [row for row in rows if row[0].startswith(first_cell)]


def number(cell):
    """'1,234 (N=60,000)' -> 1234.0; '107 (G)' -> 107.0."""
    return float(cell.split()[0].replace(",", ""))


def test_dry_run_writes_a_row_per_family(tmp_path):
    out = tmp_path / "bench.md"
    threads = torch.get_num_threads()
    try:  # one thread: tiny models gain nothing from two, and a busy machine makes two far slower
        text = bench.main(["--dry-run", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert out.read_text() == text
    assert "torch " + torch.__version__ in text and "threads" in text
    header = table_rows(text, "family")[0]
    assert header == bench.COLUMNS
    col = {name: bench.COLUMNS.index(name) for name in bench.COLUMNS}
    for name in bench_families.FAMILIES:
        (row,) = table_rows(text, name + " (")
        assert len(row) == len(bench.COLUMNS)
        train, epoch, sample = (number(row[col[c]]) for c in ("train img/s", "s/epoch (N)", "DDPM full-T samples/s"))
        assert train > 0 and epoch > 0 and sample > 0
        flop, flops = number(row[col["train GFLOP/img"]]), number(row[col["train GFLOP/s"]])
        assert flop > 0 and abs(flops - train * flop) <= 0.02 * flops + 0.01
        ddim = row[col["DDIM-50 samples/s"]]
        assert (ddim == "—") if name == "gan" else number(ddim) > 0
    (roof,) = table_rows(text, "float32")
    assert number(roof[1]) > 0
    data_rows = table_rows(text, "one ") + table_rows(text, "DataLoader")
    assert len(data_rows) == 2 and all(number(row[1]) > 0 for row in data_rows)
    fid_rows = [row for first in ("Inception features", "Fréchet distance", "FID of 10k")
                for row in table_rows(text, first)]
    assert len(fid_rows) == 3 and all(number(row[1]) > 0 for row in fid_rows)


def test_counted_training_flops_are_forward_plus_backward():
    """A training step costs about 3 forward passes (backward: grads of inputs and of weights)."""
    from torch.utils.flop_counter import FlopCounterMode
    fam = dict(bench_families.FAMILIES["mnist"], **bench_families.DRY_RUN)
    net, sched = bench_families.build(fam, torch.device("cpu"))
    _, train_gflop = bench_families.train_rate(fam, net, sched, 1, torch.device("cpu"))
    x = torch.zeros(fam["batch"], 1, 28, 28)
    with FlopCounterMode(display=False) as forward:
        net[0](x, torch.rand(fam["batch"]))
    ratio = train_gflop * 1e9 * fam["batch"] / forward.get_total_flops()
    assert 2.5 < ratio <= 3.0, ratio   # 3 less the first conv's unneeded input gradient


def test_plain_mode_switches_off_autocast_and_channels_last():
    """'plain' on CUDA must be fp32 NCHW everywhere the scripts' code asks common/utils.py."""
    from common import samplers, utils
    cuda = torch.device("cuda")   # a device object only: nothing runs on it
    with utils.cuda_speedups(False):
        assert utils.amp_dtype(cuda) is None
        assert utils.memory_format(cuda) == samplers.memory_format(cuda) == torch.contiguous_format
    assert utils.memory_format(cuda) == samplers.memory_format(cuda) == torch.channels_last


def test_fid_cost_times_the_timed_batches_only(monkeypatch):
    """images/s = the timed images (not the warm-up batch) / the clock's interval; FID of n vs n =
    2n images at that rate + one Fréchet distance."""
    from common import bench_device
    ticks = iter([100.0, 104.0])                                    # the timed batches take 4 s
    monkeypatch.setattr(bench_device, "clock", lambda device: next(ticks))
    fid = bench_device.fid_cost(torch.device("cpu"), n=500, batches=3, batch_size=2, dim=32)
    assert fid["batch"] == 2 and fid["rate"] == 3 * 2 / 4.0 and fid["fd_seconds"] > 0
    assert fid["fid_seconds"] == pytest.approx(1000 / 1.5 + fid["fd_seconds"])
