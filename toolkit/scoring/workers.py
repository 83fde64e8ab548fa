"""Worker processes for scoring on CPU (``toolkit evaluate --jobs N``): an ordered map over tasks.

Why processes: on CPU a wav2vec clip is a chain of small convolutions that split badly across the
intra-op threads of one process; N processes with one thread each use N cores better, and far
better when other programs load the machine, where threads of one process wait for each other
(bench/bench_evaluate.py). Each worker holds its own copy of the state (the scorer), sent once when
the worker starts, and runs ``fn(state, task)``; :func:`ordered_map` yields the results in task
order, so a caller that merges them in that order gets exactly what one process gets.

Workers are started with ``spawn`` (a fresh interpreter: no OpenMP or lock state inherited from a
forked parent), ignore Ctrl-C (the parent stops them), and exit by themselves if the parent dies
without stopping them (SIGKILL).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

_FN: Callable[[Any, Any], Any] | None = None
_STATE: Any = None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.5)


def _start_worker(fn: Callable[[Any, Any], Any], state: Any, parent: int) -> None:
    global _FN, _STATE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops the pool
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _FN, _STATE = fn, state


def _run_task(task: Any) -> Any:
    assert _FN is not None
    return _FN(_STATE, task)


def ordered_map(fn: Callable[[Any, Any], Any], state: Any, tasks: Sequence[Any], jobs: int = 1,
                what: str = "tasks") -> Iterator[Any]:
    """``fn(state, task)`` for every task, yielded in task order.

    With ``jobs > 1`` (and more than one task) ``min(jobs, len(tasks))`` worker processes of one
    intra-op thread each run the tasks, each with its own unpickled copy of ``state``; ``fn`` must be
    a module-level function. State that cannot be pickled runs in this process (logged). An
    exception in a worker is raised here, when its task's turn comes; the workers are then stopped,
    as they are when the caller stops early or on Ctrl-C.
    """
    jobs = min(jobs, len(tasks))
    sendable = False
    if jobs > 1:
        try:
            pickle.dumps(state)  # multiprocessing sends it to each worker the same way
            sendable = True
        except Exception as err:  # noqa: BLE001 - any pickling failure means: stay in this process
            log.info("%s run in one process: the scorer cannot be sent to worker processes (%s)", what, err)
    if not sendable:
        for task in tasks:
            yield fn(state, task)
        return
    context = multiprocessing.get_context("spawn")
    # Workers are born with Ctrl-C ignored (an ignored signal stays ignored across exec, and Python
    # then installs no KeyboardInterrupt handler): one still starting when Ctrl-C comes would otherwise
    # print a traceback before its initializer runs. A Ctrl-C in these few milliseconds is lost.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        pool = context.Pool(jobs, initializer=_start_worker, initargs=(fn, state, os.getpid()))
    finally:
        if main and previous is not None:  # None: a handler set outside Python, left as it is
            signal.signal(signal.SIGINT, previous)
    finished = False
    try:
        yield from pool.imap(_run_task, tasks, chunksize=1)
        finished = True
    finally:
        if finished:
            pool.close()
        else:
            pool.terminate()
        pool.join()
