"""`engine launch [torchrun options] SPEC [overrides]`: torchrun's launcher in this process, the engine's statuses.

Plain torchrun reports a signal it received as a 25-line SignalException traceback and exit status 1, and a
worker that failed with a user error (2) or a non-finite loss (3) as a ChildFailedError block and status 1.
This command parses the same options with torchrun's own parser, runs the same launcher (torch.distributed
.run.run -> elastic_launch), hides its log lines (set LOGLEVEL to see them) and turns its outcomes into the
engine's statuses: a signal -> 128 + signal, with the workers' one-line message; a worker's user error or
non-finite loss -> that status, with the worker's own message only; anything else -> torchrun's report, 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from engine.runtime.signals import SIGNALS

STATUS_ENV = "ENGINE_LAUNCH_STATUS"  # a directory where each worker leaves its exit status
ENGINE_STATUSES = (2, 3)  # user error, non-finite loss: the worker has said why
PREEMPTED = {128 + int(s) for s in SIGNALS}


def report_status(code: int) -> None:
    """Leave this worker's exit status where `engine launch` looks for it (nothing outside `engine launch`)."""
    where, rank = os.environ.get(STATUS_ENV), os.environ.get("RANK")
    if not where or rank is None:
        return
    try:
        with open(os.path.join(where, f"rank-{rank}"), "w", encoding="ascii") as f:
            f.write(str(code))
    except OSError:
        pass  # the launcher is gone or its directory too: nobody to tell


def _statuses(where: str) -> dict[int, int]:
    out = {}
    for name in os.listdir(where):
        try:
            with open(os.path.join(where, name), encoding="ascii") as f:
                out[int(name.removeprefix("rank-"))] = int(f.read())
        except (OSError, ValueError):
            continue
    return out


def _signalled(signum: int, statuses: dict[int, int], local: int, timeout: int) -> int:
    """Status after the launcher got a signal; one line only when some worker did not stop cleanly."""
    clean = len(statuses) >= local and all(c == 0 or c in PREEMPTED for c in statuses.values())
    if not clean:
        print(
            f"signal {signum} received: the workers stopped without confirming a checkpoint (a worker "
            f"checkpoints at its next step boundary and is killed {timeout} s after the signal; "
            "--shutdown-timeout gives it more); rerun the same command to resume from the newest complete "
            "checkpoint",
            file=sys.stderr,
        )
    return 128 + signum


def _failed(err: BaseException) -> int:
    """Status after a worker failed: an engine status as the worker said, else torchrun's report and 1."""
    failures = sorted(err.failures.items(), key=lambda kv: (kv[1].timestamp, kv[0]))  # type: ignore[attr-defined]
    codes = [f.exitcode for _, f in failures]
    for code in codes:
        if code in ENGINE_STATUSES:
            return code
    if codes and all(c in PREEMPTED for c in codes):  # the workers themselves were signalled (e.g. Slurm)
        return codes[0]
    print(str(err), file=sys.stderr)
    return 1


def _quiet() -> None:
    """Hide torchrun's warnings (rendezvous banners, 'Sending process N closing signal'); LOGLEVEL shows them."""
    if os.environ.get("LOGLEVEL"):
        return
    for handler in logging.getLogger("torch.distributed").handlers:
        handler.setLevel(logging.CRITICAL)


def cmd_launch(argv: Sequence[str]) -> int:
    """Launch `engine run SPEC [overrides]` with torchrun's launcher; exit with the engine's status."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from engine.cli import USER_ERROR, _fail, _load, _split

    parser = torchrun.get_args_parser()
    parser.prog = "engine launch"
    parser.description = (
        "Run a spec with torchrun's launcher: engine launch [torchrun options] SPEC [overrides]."
    )
    default_signals = parser.get_default("signals_to_handle")
    args = parser.parse_args(list(argv))
    if args.module or args.no_python or args.run_path:
        return _fail(
            "engine launch always starts `python -m engine run`; drop -m, --no-python and --run-path"
        )
    words = [args.training_script, *args.training_script_args]
    files, overrides = _split([w for w in words if not w.startswith("--stage")])
    if _load(files[0], overrides) is None:  # a spec mistake is reported once, before any worker starts
        return USER_ERROR
    args.module, args.training_script, args.training_script_args = True, "engine", ["run", *words]
    if args.signals_to_handle == default_signals:  # the engine also stops cleanly on SIGUSR1 (Slurm)
        args.signals_to_handle += ",SIGUSR1"
    timeout = args.shutdown_timeout
    if timeout is None:
        timeout = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30"))
    args.shutdown_timeout = timeout
    os.environ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(timeout)  # the workers' grace if this launcher dies
    where = tempfile.mkdtemp(prefix="engine-launch-")
    os.environ[STATUS_ENV] = where
    local = torchrun.determine_local_world_size(args.nproc_per_node)
    _quiet()
    handled = [
        getattr(signal, n.strip()) for n in args.signals_to_handle.split(",") if hasattr(signal, n.strip())
    ]
    previous = {s: signal.getsignal(s) for s in handled}
    try:
        torchrun.run(args)
        return 0
    except SignalException as e:
        return _signalled(int(e.sigval), _statuses(where), local, timeout)
    except ChildFailedError as e:
        return _failed(e)
    finally:
        shutil.rmtree(where, ignore_errors=True)
        for s, handler in previous.items():  # torchrun's handlers raise SignalException; the launch is over
            signal.signal(s, handler)
