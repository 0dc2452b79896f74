"""Stopping cleanly: Ctrl-C and SLURM's warning of preemption or the time limit ask training to stop
after the current step; the run then saves its checkpoint, and `StopRequest.end_run()` decides what
happens next (SLURM requeues the job; otherwise the program exits, saying how to continue)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from src.checkpoint import how_to_continue
from src.paths import shown

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["INTERRUPTED", "SLURM_STOP_SIGNAL", "StopRequest", "stop_on_signals"]

log = logging.getLogger(__name__)
INTERRUPTED = 130  # the exit code of a program stopped by Ctrl-C (128 + SIGINT)
# SLURM sends this signal to a job shortly before it preempts it or the job reaches its time limit, as
# submitit asks it to (`sbatch --signal=USR2@<signal_delay_s>`); submitit's handler then requeues the job.
SLURM_STOP_SIGNAL = signal.SIGUSR2


@dataclass(eq=False)
class StopRequest:
    """Filled in by `stop_on_signals()` when a signal asks training to stop after the current step."""

    requested: bool = False
    # Set when SLURM's signal asked: submitit's handler, deferred until the checkpoint is saved. It
    # requeues the job (which then continues from the checkpoint) and exits.
    requeue: Callable[[], object] | None = None

    def end_run(self, checkpoint: Path, output_dir: Path) -> NoReturn:
        """End the run that this request stopped, once its checkpoint is saved."""
        if self.requeue is not None:
            # The job starts again in this output directory, and so continues from the checkpoint.
            log.info(f"Stopped for SLURM (preemption or time limit): saved in {shown(checkpoint)}.")
            self.requeue()  # submitit requeues the job, or raises if it timed out more than max_num_timeout times
        log.info(f"Interrupted: saved in {shown(checkpoint)}; to continue, {how_to_continue(output_dir)}")
        raise SystemExit(INTERRUPTED)


@contextmanager
def stop_on_signals() -> Generator[StopRequest]:
    """Within this block the first Ctrl-C (SIGINT), and in a SLURM job that submitit started its stop
    signal, only fill in the yielded StopRequest, which training checks after each step to stop cleanly;
    a second one of either is handled at once, as usual."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield stop
        return
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT) or signal.default_int_handler}
    slurm_handler = signal.getsignal(SLURM_STOP_SIGNAL)
    if callable(slurm_handler):  # submitit's; elsewhere the signal keeps its default action
        previous[SLURM_STOP_SIGNAL] = slurm_handler

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.requested = True
        handler = previous[signal.Signals(signum)]
        if signum == SLURM_STOP_SIGNAL and callable(handler):
            stop.requeue = lambda: handler(signum, frame)
        signal.signal(signum, handler)

    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
