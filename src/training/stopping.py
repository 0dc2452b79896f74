"""Stopping cleanly: Ctrl-C and SLURM's warning of preemption or the time limit ask training to stop
after the current step; the run then saves its checkpoint, and `StopRequest.end_run()` decides what
happens next (SLURM requeues the job; otherwise the program exits, saying how to continue)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from src.common.exits import INTERRUPTED_EXIT_CODE
from src.common.paths import shown
from src.records.run_directory import how_to_continue

if TYPE_CHECKING:
    from types import FrameType

    from src.training.distributed import World

__all__ = ["SLURM_STOP_SIGNAL", "StopRequest", "stop_on_signals"]

log = logging.getLogger(__name__)
# SLURM sends this signal to a job shortly before it preempts it or the job reaches its time limit, as
# submitit asks it to (`sbatch --signal=USR2@<signal_delay_s>`); submitit's handler then requeues the job.
SLURM_STOP_SIGNAL = signal.SIGUSR2


@dataclass(eq=False)
class StopRequest:
    """Filled in by `stop_on_signals()` when a signal asks training to stop after the current step."""

    cause: signal.Signals | None = None  # the signal that asked, once one has
    # submitit's handler of SLURM's signal, where submitit installed one; deferred until the checkpoint is
    # saved, it requeues the job (which then continues from the checkpoint) and exits.
    slurm_handler: Callable[[int, FrameType | None], object] | None = None
    _exchange: Callable[[], int] | None = field(default=None, init=False)  # see `agree()`

    @property
    def requested(self) -> bool:
        return self.cause is not None

    @property
    def requeue(self) -> Callable[[], object] | None:
        """submitit's requeueing, when SLURM's signal asked to stop (and submitit handles it)."""
        handler = self.slurm_handler
        if self.cause is not SLURM_STOP_SIGNAL or handler is None:
            return None
        return lambda: handler(SLURM_STOP_SIGNAL, None)

    def agree(self, world: World) -> bool:
        """Whether training stops after this step. A signal may reach one process of a distributed run only
        (a user's `kill`, or Ctrl-C where some ranks run elsewhere): here the processes tell each other which
        signal, if any, each received, so that all stop after the same step. Through gloo they exchange that
        during the next step, which it then never holds up (in shared memory at once: it takes microseconds),
        and stop after it. SLURM's signal wins over Ctrl-C, so that the job is requeued."""
        if world.size == 1:
            return self.requested
        exchanged, self._exchange = self._exchange, world.start_max(self.cause or 0)
        agreed = exchanged() if exchanged is not None else 0
        if agreed:
            self.cause = signal.Signals(agreed)
        return agreed != 0

    def end_run(self, checkpoint: Path, output_dir: Path, world: World) -> NoReturn:
        """End the run that this request stopped, once its checkpoint is saved."""
        if not world.is_main:
            # Rank 0 requeues the job or says how to continue. Exit status 0: a SLURM cluster that ends a
            # job when one of its tasks fails (KillOnBadExit) would otherwise stop rank 0 before it requeues.
            raise SystemExit(0)
        requeue = self.requeue
        if requeue is not None:
            # The job starts again in this output directory, and so continues from the checkpoint.
            log.info(f"Stopped for SLURM (preemption or time limit): saved in {shown(checkpoint)}.")
            requeue()  # submitit requeues the job, or raises if it timed out more than max_num_timeout times
        log.info(f"Interrupted: saved in {shown(checkpoint)}; to continue, {how_to_continue(output_dir)}")
        raise SystemExit(INTERRUPTED_EXIT_CODE)


@contextmanager
def stop_on_signals() -> Generator[StopRequest]:
    """Within this block the first Ctrl-C (SIGINT), and in a SLURM job that submitit started its stop
    signal, only fill in the yielded StopRequest, which training checks after each step to stop cleanly;
    a second one of either is handled at once, as usual."""
    slurm_handler = signal.getsignal(SLURM_STOP_SIGNAL)
    stop = StopRequest(slurm_handler=slurm_handler if callable(slurm_handler) else None)
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield stop
        return
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT) or signal.default_int_handler}
    if callable(slurm_handler):  # submitit's; elsewhere the signal keeps its default action
        previous[SLURM_STOP_SIGNAL] = slurm_handler

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.cause = signal.Signals(signum)
        signal.signal(signum, previous[stop.cause])

    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
