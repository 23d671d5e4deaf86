"""The run folder: results/<script>/ (or --out-dir), checked before anything is written and then owned by one run at
a time; and the one line a script ends with when it cannot go on (Ctrl-C, out of memory, a full disk).

A run owns only what it wrote: run.write_bytes lists every file it writes in the folder's record, .written (beside
config.json). --overwrite, or a fresh start after a run that stopped before its first checkpoint, deletes exactly
the files listed there; a user's notes, plots and subfolders stay, whatever their names."""
import atexit
import contextlib
import errno
import json
import os
import signal
import socket
import sys
from pathlib import Path

import torch

from . import run
from .run import RECORD, fail, next_step, read_checkpoint, save_json, saved_checkpoints, written


def run_folder(args, script_file, match=()):
    """The run's output folder, results/<script>/ (…_quick/ for --quick, …_dry_run/ for --dry-run) unless --out-dir
    names one, checked without writing anything:
      - a folder that holds another script's run (its config.json says whose) is refused, --overwrite or not;
      - --resume needs this script's checkpoints there, of a run as dry as this one (--dry-run never continues a
        real run), trained with the same `match` settings;
      - a fresh run refuses a folder that holds a checkpoint, unless --overwrite (or a dry run over a dry run),
        and one whose config.json or checkpoints the record does not list (they are not this script's runs');
        a dry run never replaces a real run."""
    args.script = Path(script_file).stem
    run.folder.update(out=None, args=None)          # nothing of this run is written before open_run
    preset = "_quick" if args.quick else "_dry_run" if args.dry_run else ""
    out = Path(args.out_dir) if args.out_dir else Path("results", args.script + preset)
    if out.exists() and not out.is_dir():
        fail(f"--out-dir {out} is a file, not a folder: name a folder")
    config = read_config(out)
    if config is not None and config.get("script") != args.script:
        fail(f"{out} holds a run of {config.get('script') or 'another program'} (its config.json says so), which "
             f"{args.script} never replaces: use another --out-dir")
    checkpoints = sorted(out.glob("checkpoint*.pt"))
    if args.resume:
        if not checkpoints:
            fail(f"--resume: there is no checkpoint in {out} to continue; start without --resume")
        for path in checkpoints:
            check_resumable(path, args, match)
        return out
    if config is not None and args.dry_run and not config.get("dry_run"):
        fail(f"{out} holds a real run of {args.script}, which a --dry-run never replaces: use another --out-dir")
    if checkpoints and not args.overwrite and not (args.dry_run and config is not None):   # a dry run's (see above)
        fail(f"{out} holds an earlier run ({checkpoints[0].name}): add --resume to continue it, --out-dir to "
             f"start in another folder, or --overwrite to replace it")
    # a folder of this script's run with no record: --overwrite replaces its files by name and deletes none of
    # them (the record starts with this run)
    recordless = config is not None and not (out / RECORD).exists() and args.overwrite
    foreign = [p.name for p in [out / "config.json", *checkpoints] if p.is_file() and p.name not in written(out)]
    if foreign and not recordless:
        fail(f"{out} holds {', '.join(foreign)}, which the record of what {args.script}'s runs wrote there "
             f"({RECORD}) does not list: move them away, or use another --out-dir")
    return out


def read_config(out):
    """The settings in out/config.json; {} if it is not a run's; None if there is none."""
    if not (out / "config.json").is_file():
        return None
    try:
        config = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):   # unreadable, or not JSON
        return {}
    return config if isinstance(config, dict) else {}


def check_resumable(path, args, match):
    """A checkpoint --resume may continue: this script's, of a run as dry as this one, trained with the same
    `match` settings, and not past --epochs (or --train-steps)."""
    ckpt = read_checkpoint(path)
    saved = ckpt["args"]
    if saved.get("script") != args.script:
        fail(f"{path} was written by {saved.get('script', 'another program')}, not {args.script}; "
             f"use another --out-dir")
    if saved.get("dry_run", False) != args.dry_run:
        fail(f"{path} is a real run's, which --dry-run never continues: use another --out-dir" if args.dry_run else
             f"{path} is a --dry-run's (synthetic data): add --dry-run to continue it, or use another --out-dir")
    for name in match:
        if saved.get(name) != getattr(args, name):
            flag = "--" + name.replace("_", "-")
            fail(f"{path} was trained with {flag} {saved.get(name)}, not {getattr(args, name)}: pass the same "
                 f"value to continue it, or use another --out-dir")
    bound = ckpt.get("bound", "epochs")             # the flag that counts what it trained
    done = ckpt.get("epoch", ckpt.get("step", 0))
    if done > getattr(args, bound):
        flag = "--" + bound.replace("_", "-")
        fail(f"{path} has trained {done} {bound.split('_')[-1]}, more than {flag} {getattr(args, bound)}: pass "
             f"{flag} {done} or more, or use another --out-dir")


def open_run(args, out):
    """Take the folder that run_folder checked, once every other check (data, checkpoint, weights) has passed:
    one run at a time writes there (a lock names its pid); temporary files that a killed write left are removed;
    a fresh start removes what this script's earlier runs wrote there, and nothing else; config.json records the
    settings. From here on, run.write_bytes lists every file written in `out` in its record."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        take_lock(out)
    except OSError as e:   # no permission, a read-only disk, a parent that is a file, ...
        fail(f"--out-dir {out}: cannot write there ({e.strerror}); name a folder you can write to")
    for name in [RECORD, *written(out)]:            # <name>.<pid>.tmp: run.write_bytes' temporary, cut short
        for tmp in (out / name).parent.glob(f"{Path(name).name}.*.tmp"):
            tmp.unlink()
    # --resume continues the run that wrote the folder, and so may rewrite its files; so may --overwrite in a folder
    # of this script's that has no record (run_folder let it through)
    rewrite = args.resume or ((out / "config.json").is_file() and not (out / RECORD).exists())
    if not args.resume:
        remove_written(out)
    run.folder.update(out=out.resolve(), args=args, rewrite=rewrite)
    save_json(vars(args), out / "config.json")
    return out


def remove_written(out):
    """Delete every file that the record lists, then the folders that this leaves empty (sweep/), then the record;
    every other file and subfolder stays."""
    names = written(out)
    for name in names:
        if (out / name).is_file():
            (out / name).unlink()
    for parent in sorted({(out / name).parent for name in names} - {out}, reverse=True):
        with contextlib.suppress(OSError):         # not empty: it holds what the run did not write
            parent.rmdir()
    (out / RECORD).unlink(missing_ok=True)


def take_lock(out):
    """One run at a time per folder: out/.lock holds 'pid host start' (start: when that process started, on
    Linux). A lock whose process is gone, or is another one that got its pid later (after a reboot), or that was
    taken on another machine (an earlier Colab runtime) is taken over; a live run's stops this one."""
    lock = out / ".lock"
    pid, host, start = (lock.read_text().split() + ["", "", ""])[:3] if lock.is_file() else ("", "", "")
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and holds_lock(int(pid), start):
        who = f"another run (pid {pid})" if start else f"pid {pid} (a run, or a process that got its pid later)"
        fail(f"{who} holds {lock}: wait for it to end, or use another --out-dir (if no run writes to {out}, "
             f"delete {lock})")
    lock.write_text(f"{os.getpid()} {socket.gethostname()} {started(os.getpid()) or ''}")
    atexit.register(release_lock, lock)


def holds_lock(pid, start):
    """Whether process `pid` is still the one that took the lock: alive, and started when the lock says (where
    that can be read: Linux; elsewhere, and in a lock without it, alive is taken to mean so)."""
    now = started(pid)
    return alive(pid) and (not start or now is None or now == start)


def alive(pid):
    if os.name == "nt":             # Windows has no signal 0 to ask with: the message says how to clear the lock
        return True
    try:
        os.kill(pid, 0)             # signal 0: is that process still there?
    except ProcessLookupError:
        return False
    except OSError:                 # another user's process
        pass
    return True


def started(pid):
    """When process `pid` started, in clock ticks after boot (field 22 of /proc/<pid>/stat); None off Linux."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def release_lock(lock):
    with contextlib.suppress(OSError):
        if lock.read_text().split(" ")[0] == str(os.getpid()):
            lock.unlink()


# --- the last line of a run that cannot go on ---

@contextlib.contextmanager
def clean_exit():
    """Ctrl-C (or SIGTERM: exit status 130), running out of memory and a full disk end the run with one line: what
    the folder holds now, and the step that works next."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # which raises KeyboardInterrupt
    try:
        yield
    except KeyboardInterrupt:
        print(f"\ninterrupted: {next_step('run the same command again')}", file=sys.stderr, flush=True)
        raise SystemExit(130)
    except (RuntimeError, MemoryError) as e:   # torch.OutOfMemoryError on CUDA; the CPU allocator's RuntimeError
        if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and "can't allocate memory" not in str(e):
            raise
        fail(f"out of memory: {memory_note()}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        place = e.filename or run.folder["out"] or "the output folder"
        fail(f"no space left on the disk that holds {place}: free some, then {next_step('run the same command again')}")


def memory_note():
    """The batch to lower after running out of memory: the training batch, or the sampling one (--sample-batch),
    which --resume may change; it keeps the training batch."""
    args = run.folder["args"]
    if args is None:
        return "free some memory (it ran out while reading the data or building the networks: nothing was written)"
    train = "--classifier-batch-size" if hasattr(args, "classifier_batch_size") else "--batch-size"
    sample = hasattr(args, "sample_batch")          # 04 and 05 have none
    saved = saved_checkpoints()
    if not saved:
        flags = f"{train} or --sample-batch" if sample else train
        return f"run the same command again with a lower {flags} (no checkpoint was saved yet)"
    resume = " (with a lower --sample-batch if it ran out while sampling)" if sample else ""
    return (f"{', '.join(saved)} is intact: add --resume to the same command to continue from it{resume}; a lower "
            f"{train} needs a fresh start instead (--overwrite), as --resume keeps it")
