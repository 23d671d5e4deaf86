"""Training loop: the loss is Algorithm 1's, --resume continues exactly, bad states fail clearly."""
import argparse
import os
import signal
from functools import partial

import pytest
import torch

from common.data import synthetic_dataset
from conftest import PointMassDenoiser
from common.schedules import ddpm_schedule
from common import train
from common.train import ddpm_loss, fit_epoch, run_epochs
from common.train_state import Training, load_state, make_optimizer, start_training
from common.utils import Progress
from common.unet import ConditionalDenoisingUNet, DenoisingUNet


def _args(**kw):
    base = dict(epochs=2, batch_size=32, lr=1e-3, lr_decay_to=0.1, seed=0, p_uncond=0.1, hidden=8, T=20,
                beta_1=1e-4, beta_T=0.02)
    return argparse.Namespace(**{**base, **kw})


def _setup(args):
    torch.manual_seed(123)
    model = ConditionalDenoisingUNet(hidden=args.hidden)
    return (model, *make_optimizer(model, args, torch.device("cpu")))


def _training(args, path, resume=False):
    torch.manual_seed(123)
    return start_training(ConditionalDenoisingUNet(hidden=args.hidden), args, torch.device("cpu"),
                          path / "checkpoint.pt", resume=resume)


def _ddpm_epochs(training, x, y, sched):
    return run_epochs(training, ddpm_loss, {"x0": x, "y": y}, sched=sched, p_uncond=0.1)


def test_resume_after_one_epoch_equals_two_straight_epochs(tmp_path):
    args, sched = _args(), ddpm_schedule(20)
    x, y = synthetic_dataset(96)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight = _training(args, tmp_path / "a")
    list(_ddpm_epochs(straight, x, y, sched))
    # run B: stop after epoch 1 (as Ctrl-C would), then resume from its checkpoint in fresh objects
    for _ in _ddpm_epochs(_training(args, tmp_path / "b"), x, y, sched):
        break
    resumed = _training(args, tmp_path / "b", resume=True)
    assert resumed.start == 1 and len(resumed.history["epoch"]) == 1
    list(_ddpm_epochs(resumed, x, y, sched))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.lr_scheduler.get_last_lr() == straight.lr_scheduler.get_last_lr()
    assert resumed.history["epoch"] == pytest.approx(straight.history["epoch"], rel=1e-6)
    assert (tmp_path / "b" / "losses.csv").read_text().count("\n") == 1 + 2 * 3   # header + 2 epochs × 3 batches


def _loss_with_sigterm_at_call(model, x0, y, sched, calls, at):
    calls.append(len(calls) + 1)
    if len(calls) == at:
        os.kill(os.getpid(), signal.SIGTERM)       # e.g. a cluster's time limit
    return ddpm_loss(model, x0, sched, y)


def test_sigterm_during_an_epoch_ends_training_like_ctrl_c_with_the_checkpoint_intact(tmp_path, capsys):
    args, sched = _args(epochs=3), ddpm_schedule(20)
    x, y = synthetic_dataset(64)                   # 2 batches of 32 per epoch: call 3 is in epoch 2
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        list(run_epochs(_training(args, tmp_path), _loss_with_sigterm_at_call, {"x0": x, "y": y},
                        sched=sched, calls=[], at=3))
    assert stop.value.code == 130 and "interrupted: the last finished epoch is saved" in capsys.readouterr().err
    assert _training(args, tmp_path, resume=True).start == 1
    assert signal.getsignal(signal.SIGTERM) == handler_before    # the handler is put back


def test_ctrl_c_in_epoch_1_says_there_is_nothing_to_resume(tmp_path, capsys):
    args, sched = _args(epochs=3), ddpm_schedule(20)
    x, y = synthetic_dataset(64)                   # call 1 is in epoch 1: no checkpoint exists yet
    with pytest.raises(SystemExit) as stop:
        list(run_epochs(_training(args, tmp_path), _loss_with_sigterm_at_call, {"x0": x, "y": y},
                        sched=sched, calls=[], at=1))
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "before any checkpoint was saved" in err and "--resume" not in err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_with_fewer_epochs_than_trained_is_refused(tmp_path):
    args, sched = _args(epochs=2), ddpm_schedule(20)
    x, y = synthetic_dataset(64)
    list(run_epochs(_training(args, tmp_path), ddpm_loss, {"x0": x, "y": y}, sched=sched))
    with pytest.raises(SystemExit, match="has 2 epochs trained; --epochs 1 would claim fewer"):
        _training(_args(epochs=1), tmp_path, resume=True)
    assert _training(_args(epochs=2), tmp_path, resume=True).start == 2   # the same --epochs: resample only


def test_lr_decays_to_a_tenth_over_the_run(tmp_path):
    args = _args(epochs=4)
    model, optimizer, lr_scheduler, scaler = _setup(args)
    for _ in range(4):
        optimizer.step()
        lr_scheduler.step()
    assert lr_scheduler.get_last_lr()[0] == pytest.approx(1e-4)


class ZeroDenoiser(torch.nn.Module):
    """Stands in for ε_θ: always answers ε̂ = 0, and keeps the conditioning (c, keep) of its last call."""

    def forward(self, xt, t, *cond):
        self.cond = cond
        return torch.zeros_like(xt)


def test_ddpm_loss_is_the_noise_prediction_error():
    # a model that always answers ε̂ = 0 has loss E||ε||² = 1 (MSE) and E|ε| = √(2/π) (L1)
    torch.manual_seed(0)
    x0, sched = torch.zeros(64, 1, 28, 28), ddpm_schedule(10)
    assert ddpm_loss(ZeroDenoiser(), x0, sched).item() == pytest.approx(1.0, abs=0.01)
    assert ddpm_loss(ZeroDenoiser(), x0, sched, loss="l1").item() == pytest.approx((2 / torch.pi) ** 0.5, abs=0.01)


def test_ddpm_loss_of_the_exact_noise_predictor_is_zero():
    # the loss must pair x_t with the t it was noised at (and feed the network t/T): only then is the
    # exact ε̂ exactly right; an off-by-one in ᾱ or a t/T mix-up leaves a loss far above zero
    torch.manual_seed(0)
    sched, target = ddpm_schedule(300), torch.linspace(-1, 1, 28 * 28).reshape(1, 1, 28, 28)
    x0, y = target.expand(64, 1, 28, 28), torch.arange(64) % 10
    assert ddpm_loss(PointMassDenoiser(target, sched), x0, sched).item() < 1e-8
    assert ddpm_loss(PointMassDenoiser(target, sched), x0, sched, y=y, p_uncond=0.5).item() < 1e-8


def test_label_dropout_rate_matches_p_uncond():
    spy = ZeroDenoiser()
    torch.manual_seed(0)
    ddpm_loss(spy, torch.zeros(20_000, 1, 2, 2), ddpm_schedule(10), torch.zeros(20_000, dtype=torch.long),
              p_uncond=0.1)
    _, keep = spy.cond
    assert keep.float().mean().item() == pytest.approx(0.9, abs=0.01)


def _recorded_square_loss(model, x0, seen):
    seen.append(x0.tolist())
    return model(x0[:, None]).pow(2).mean()


class RecordingProgress(Progress):
    """Stands in for Progress: prints as usual and appends (step, images so far) of each update to `reports`."""

    def __init__(self, reports, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reports = reports

    def update(self, step, n_images, extra=""):
        super().update(step, n_images, extra)
        self.reports.append((step, self.images))


def test_fit_epoch_takes_one_step_per_batch_and_counts_every_image(monkeypatch):
    reports = []
    monkeypatch.setattr(train, "Progress", partial(RecordingProgress, reports))   # fit_epoch makes its own
    model, seen = torch.nn.Linear(1, 1), []
    optimizer, _, scaler = make_optimizer(model, _args(epochs=1), torch.device("cpu"))
    losses = fit_epoch(model, optimizer, scaler, _recorded_square_loss, {"x0": torch.arange(10.0)}, 3, "test",
                       check_every=2, seen=seen)
    assert sorted(i for b in seen for i in b) == list(range(10)) and [len(b) for b in seen] == [3, 3, 3, 1]
    assert losses.shape == (4,) and reports == [(2, 6), (4, 10)]   # the last report counts all 10 images


def test_nan_loss_stops_training_with_a_message(tmp_path):
    args = _args(epochs=1, lr=1e30)
    model = DenoisingUNet(hidden=8)
    parts = make_optimizer(model, args, torch.device("cpu"))
    x = synthetic_dataset(64)[0] * float("nan")
    training = Training(model, *parts, args=args, path=tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit, match="loss became nan in epoch 1"):
        list(run_epochs(training, ddpm_loss, {"x0": x}, sched=ddpm_schedule(10)))


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    args = _args()
    with pytest.raises(SystemExit, match="corrupt"):
        load_state(tmp_path / "checkpoint.pt", *_setup(args), "cpu", args)


def test_resume_with_another_schedule_length_is_a_one_line_error(tmp_path):
    # the weights do not depend on T, so only this check stops a resume on a different schedule
    args = _args(T=20)
    training = _training(args, tmp_path)
    list(_ddpm_epochs(training, *synthetic_dataset(32), ddpm_schedule(20)))
    with pytest.raises(SystemExit, match="trained with --T 20, not 10"):
        _training(_args(T=10), tmp_path, resume=True)
    with pytest.raises(SystemExit, match="trained with --hidden 8, not 16"):
        _training(_args(hidden=16), tmp_path, resume=True)


def test_resume_with_an_optimizer_state_that_does_not_fit_is_a_one_line_error(tmp_path):
    args = _args()
    training = _training(args, tmp_path)
    list(_ddpm_epochs(training, *synthetic_dataset(32), ddpm_schedule(20)))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    state["optimizer"]["param_groups"][0]["params"].pop()      # one parameter short: a damaged checkpoint
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(SystemExit, match="optimizer state does not fit this model"):
        _training(args, tmp_path, resume=True)


@pytest.mark.parametrize("flag, value", [("lr", 5e-4), ("seed", 1), ("p_uncond", 0.2), ("beta_T", 0.03)])
def test_resume_with_another_training_setting_is_a_one_line_error(tmp_path, flag, value):
    # the optimizer state would silently keep the old lr, the old epochs saw the old schedule: refuse
    list(_ddpm_epochs(_training(_args(epochs=1), tmp_path), *synthetic_dataset(32), ddpm_schedule(20)))
    with pytest.raises(SystemExit, match=f"trained with --{flag.replace('_', '-')} .*, not {value}"):
        _training(_args(epochs=2, **{flag: value}), tmp_path, resume=True)


def test_resume_with_more_epochs_decays_the_lr_over_the_new_length(tmp_path, capsys):
    args, x, sched = _args(epochs=2, lr_decay_to=0.1), synthetic_dataset(32), ddpm_schedule(20)
    list(_ddpm_epochs(_training(args, tmp_path), *x, sched))
    longer = _training(_args(epochs=4, lr_decay_to=0.1), tmp_path, resume=True)
    assert "--epochs 2 -> 4" in capsys.readouterr().out
    lrs = [longer.optimizer.param_groups[0]["lr"]]                  # epoch 3 runs at lr × 0.1^(2/4)
    for _ in _ddpm_epochs(longer, *x, sched):
        lrs.append(longer.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-3 * 0.1 ** (e / 4) for e in (2, 3, 4)])   # ends at lr × lr_decay_to


def test_class_vector_is_a_num_classes_wide_one_hot_whatever_labels_the_batch_holds():
    # Handout D Algorithm 3 line 4: c = one-hot(y) over all K = 10 classes, also for a batch that lacks class 9
    # (F.one_hot(y) without K would size c by the batch's largest label)
    spy, y = ZeroDenoiser(), torch.tensor([0, 3, 1, 3])
    ddpm_loss(spy, torch.zeros(4, 1, 2, 2), ddpm_schedule(10), y)
    c, _ = spy.cond
    assert torch.equal(c, torch.nn.functional.one_hot(y, 10))
