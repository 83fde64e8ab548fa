"""Worker processes for scoring on CPU (``toolkit evaluate --jobs N``): an ordered map over tasks.

Why processes: on CPU a wav2vec clip is a chain of small convolutions that split badly across the
intra-op threads of one process; N processes with one thread each use N cores better, and far
better when other programs load the machine, where threads of one process wait for each other
(bench/bench_evaluate.py).

A :class:`WorkerPool` starts its workers once and keeps them for every scorer and dataset of an
evaluation (a worker costs seconds to start: a fresh interpreter importing torch). Each
:meth:`WorkerPool.map` sends its state (the scorer) to every worker once, then hands out tasks as
workers become free and yields the results in task order, so a caller that merges them in that
order gets exactly what one process gets. :func:`ordered_map` is the same with a pool of its own.

Workers are forked where that is safe (:func:`start_method`: no other thread, no CUDA) and spawned
otherwise; they ignore Ctrl-C (the parent stops them), and exit by themselves if the parent dies
without stopping them (SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

log = logging.getLogger(__name__)

TASKS_IN_FLIGHT = 2  # per worker: the next task is already there while the parent merges a result


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


def _worker_main(conn, parent: int) -> None:
    """A worker's loop: ``("state", fn, state)`` replaces what it runs, ``("task", i, task)`` runs
    ``fn(state, task)`` and answers ``("done", i, result)`` or ``("error", i, exception)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which stops the workers
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    fn: Callable[[Any, Any], Any] | None = None
    state: Any = None
    broken: BaseException | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe
        except Exception as err:  # noqa: BLE001 - a state that does not unpickle here: answer every task with it
            fn, state, broken = None, None, err
            continue
        if message[0] == "state":
            _, fn, state = message
            broken = None
            continue
        if message[0] == "stop":
            return
        _, index, task = message
        try:
            if broken is not None:
                raise broken
            assert fn is not None, "a task came before any state"
            answer = ("done", index, fn(state, task))
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the parent, in its turn
            answer = ("error", index, err)
        try:
            conn.send(answer)
        except Exception as err:  # noqa: BLE001 - a result or exception that does not pickle
            conn.send(("error", index, RuntimeError(f"the worker's answer could not be sent back: {err!r}")))


@contextlib.contextmanager
def _sigint_ignored():
    """Workers are born with Ctrl-C ignored (an ignored signal stays ignored across exec, and Python
    then installs no KeyboardInterrupt handler): one still starting when Ctrl-C comes would otherwise
    print a traceback before its own handler is set. A Ctrl-C in these few milliseconds is lost."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main and previous is not None:  # None: a handler set outside Python, left as it is
            signal.signal(signal.SIGINT, previous)


def start_method() -> str:
    """``fork`` where it is safe, else ``spawn``.

    A forked worker is ready at once; a spawned one first imports torch (about two seconds of one
    core, a tenth of scoring a few hundred clips). Forking is safe when this process runs no other
    Python thread (whose locks the child would inherit held) and has not started CUDA; the workers
    then run torch with one thread, so they never enter an OpenMP thread pool copied from here.
    """
    import sys

    if sys.platform != "linux" or threading.active_count() > 1:
        return "spawn"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


class _Worker:
    def __init__(self, context) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.pending: list[int] = []  # task indices sent and not answered yet, in order


class WorkerPool:
    """``jobs`` worker processes of one intra-op thread each, started now and reused by every
    :meth:`map` until :meth:`close` (or the end of a ``with`` block).

        >>> with WorkerPool(2) as pool:
        ...     for result in pool.map(score_batch, scorer, tasks):   # in task order
        ...         ...

    A failed task, a worker that dies, Ctrl-C or a caller that stops reading stops the workers; the
    pool is then closed.
    """

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}")
        context = multiprocessing.get_context(start_method())
        self._workers: list[_Worker] = []
        with _sigint_ignored():
            for _ in range(jobs):
                self._workers.append(_Worker(context))

    @property
    def closed(self) -> bool:
        return not self._workers

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(terminate=kind is not None)

    def close(self, *, terminate: bool = False) -> None:
        """Stop the workers: let them finish (default) or kill them (``terminate``)."""
        workers, self._workers = self._workers, []
        for w in workers:
            if terminate:
                w.process.terminate()
            else:
                with contextlib.suppress(OSError):
                    w.conn.send(("stop",))
        for w in workers:
            w.process.join(timeout=None if terminate else 30)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def map(self, fn: Callable[[Any, Any], Any], state: Any, tasks: Sequence[Any], what: str = "tasks") -> Iterator[Any]:
        """``fn(state, task)`` for every task in the workers, yielded in task order. ``fn`` must be a
        module-level function and ``state`` picklable (else ``TypeError`` before anything runs). A
        task's exception is raised here when its turn comes (the results before it are yielded first)."""
        if not self.send_state(fn, state):
            raise TypeError(f"{what}: the state cannot be sent to worker processes (it does not pickle)")
        return self._run(list(tasks), what)

    def send_state(self, fn: Callable[[Any, Any], Any], state: Any) -> bool:
        """Give every worker ``fn`` and ``state`` (pickled once); ``False``, with nothing sent, when
        they do not pickle (logged)."""
        if self.closed:
            raise RuntimeError("the worker pool is closed")
        payload = _state_message(fn, state)
        if payload is None:
            return False
        self._broadcast(payload)
        return True

    def _broadcast(self, payload: bytes) -> None:
        """Send a pickled ``("state", fn, state)`` (:func:`_state_message`) to every worker."""
        for w in self._workers:
            self._send(w, payload, "the scorer")

    def _send(self, w: _Worker, message: Any, what: str) -> None:
        """Send a message (``bytes``: already pickled, for the worker's ``recv()``); a worker that
        has died becomes one clear error, and the pool is closed."""
        try:
            if isinstance(message, bytes):
                w.conn.send_bytes(message)
            else:
                w.conn.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            w.process.join(timeout=5)
            self.close(terminate=True)
            raise RuntimeError(f"a worker process died (exit code {w.process.exitcode}) before it could take "
                               f"{what}; rerun with --jobs 1 to see the error in this process") from None

    def _run(self, tasks: list[Any], what: str) -> Iterator[Any]:
        results: dict[int, tuple[str, Any]] = {}
        next_task = next_result = 0
        finished = False
        try:
            while next_result < len(tasks):
                for w in self._workers:  # keep every worker supplied
                    while len(w.pending) < TASKS_IN_FLIGHT and next_task < len(tasks):
                        self._send(w, ("task", next_task, tasks[next_task]), f"its {what} task")
                        w.pending.append(next_task)
                        next_task += 1
                while next_result in results:
                    kind, value = results.pop(next_result)
                    if kind == "error":
                        raise value
                    yield value
                    next_result += 1
                if next_result < len(tasks):
                    self._collect(results, what)
            finished = True
        finally:
            if not finished:
                self.close(terminate=True)

    def _collect(self, results: dict[int, tuple[str, Any]], what: str) -> None:
        """Wait for at least one answer and file it under its task index."""
        busy = [w for w in self._workers if w.pending]
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
        for w in busy:
            if w.conn in ready or w.conn.poll():
                try:
                    kind, index, value = w.conn.recv()
                except (EOFError, OSError):
                    w.process.join(timeout=5)
                    raise RuntimeError(f"a {what} worker process ended without answering (exit code "
                                       f"{w.process.exitcode}); rerun with --jobs 1 to see the error in this process") from None
                w.pending.remove(index)
                results[index] = (kind, value)
            elif w.process.sentinel in ready:
                w.process.join()
                raise RuntimeError(f"a {what} worker process died (exit code {w.process.exitcode}) while "
                                   f"scoring; rerun with --jobs 1 to see the error in this process")


def _state_message(fn: Callable[[Any, Any], Any], state: Any) -> bytes | None:
    """``("state", fn, state)`` pickled for the workers' ``recv()``, or ``None`` (logged) when it does
    not pickle. Plain pickle, once for all workers: multiprocessing's own pickler would pass tensors
    as shared-memory handles that only one process can take."""
    try:
        return pickle.dumps(("state", fn, state), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001 - any pickling failure means: stay in the calling process
        log.info("running in one process: the scorer cannot be sent to worker processes (%s)", err)
        return None


def ordered_map(fn: Callable[[Any, Any], Any], state: Any, tasks: Sequence[Any], jobs: int = 1,
                what: str = "tasks", pool: WorkerPool | None = None) -> Iterator[Any]:
    """``fn(state, task)`` for every task, yielded in task order.

    With more than one task: in ``pool`` when one is given (and open), else with ``jobs > 1`` in a
    pool of ``min(jobs, len(tasks))`` workers started for this call and stopped after it. In this
    process otherwise, or when ``state`` does not pickle (logged).
    """
    tasks = list(tasks)
    if len(tasks) > 1 and pool is not None and not pool.closed:
        if pool.send_state(fn, state):
            yield from pool._run(tasks, what)
            return
    elif len(tasks) > 1 and jobs > 1:
        payload = _state_message(fn, state)  # checked before starting workers for nothing
        if payload is not None:
            with WorkerPool(min(jobs, len(tasks))) as own:
                own._broadcast(payload)
                yield from own._run(tasks, what)
            return
    for task in tasks:
        yield fn(state, task)
