"""The continuous batch: every active request's lanes stepped through the model as one batch, on the server's event loop.

Each request's lanes are the runtime's own (runtime.generate.Lanes, started by start_lanes with
the prompt fed); onnxruntime gives each lane of a batch the same logits as that lane alone, so a
request's text does not depend on what else is in the batch: it is what charlstm-sample prints.

The draws and the hand-over to each request run on the event loop itself, and only the model's
step (which releases the GIL) on a thread of its own: while the model steps, the loop sends the
characters just drawn. One thread does the Python work of both the batch and the HTTP side,
so they never wait on each other for the GIL or wake each other through the loop's pipe.
"""

import asyncio
import collections
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from charlstm.runtime.generate import Lanes
from charlstm.runtime.model import Model, State


BACKLOG = 256  # draws a job may run ahead of its reader


@dataclass(eq=False)
class Job:
    """One text's lanes in the batch: the logits they draw from next (B, V), their state
    (L, B, H), and `deliver(pieces, records)`, called on the event loop after each draw with
    each lane's new text, and once more with None when the job has left the batch."""

    lanes: Lanes
    logits: np.ndarray
    state: State
    deliver: Callable[[list[str] | None, list | None], None]
    cancelled: bool = False  # the job leaves at the next step
    deadline: float = math.inf  # time.monotonic() by which it leaves, done or not
    delivered: int = 0  # draws handed to `deliver` (written by the engine only)
    taken: int = 0  # draws its reader has taken (written by the reader only)

    @property
    def behind(self) -> bool:
        """Its reader is BACKLOG draws behind (a slow client): it skips steps until it catches up,
        which changes nothing in its text, only when it comes."""
        return self.delivered - self.taken >= BACKLOG

    @property
    def width(self) -> int:
        return len(self.logits)


@dataclass
class Metrics:
    """What /metrics reports, written by the engine."""

    steps: int = 0
    step_seconds: float = 0.0
    characters: int = 0
    active_lanes: int = 0
    waiting: int = 0


class Engine:
    """Runs jobs as one batch until each is done or cancelled; at most `max_lanes` lanes at once,
    the others wait in order of arrival. Every method is called on the event loop that started it."""

    def __init__(self, model: Model, max_lanes: int):
        self.model, self.max_lanes = model, max_lanes
        self.metrics = Metrics()
        self._waiting: collections.deque[Job] = collections.deque()
        self._jobs: list[Job] = []
        self._closing = False
        self._arrived = asyncio.Event()
        self._stepper = ThreadPoolExecutor(1, "charlstm-step")  # the model's step, off the loop
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """End every job (each gets its None) and stop."""
        self._closing = True
        self._arrived.set()
        await self._task
        self._stepper.shutdown()

    def submit(self, job: Job) -> None:
        self._waiting.append(job)
        self._arrived.set()

    def cancel_all(self) -> None:
        """Every job in hand leaves at the next step."""
        for job in [*self._jobs, *self._waiting]:
            job.cancelled = True

    async def _loop(self) -> None:
        try:
            while not self._closing:
                self._admit()
                if self._jobs:
                    await self._step()
                else:
                    self._arrived.clear()
                    await self._arrived.wait()
        finally:
            for job in [*self._jobs, *self._waiting]:
                job.deliver(None, None)

    def _admit(self) -> None:
        """Waiting jobs that were cancelled or are past their deadline leave; those that fit join the batch."""
        now = time.monotonic()
        for job in [j for j in self._waiting if j.cancelled or now > j.deadline]:
            self._waiting.remove(job)
            job.deliver(None, None)
        used = sum(j.width for j in self._jobs)
        while self._waiting and used + self._waiting[0].width <= self.max_lanes:
            job = self._waiting.popleft()
            self._jobs.append(job)
            used += job.width
        self.metrics.active_lanes, self.metrics.waiting = used, len(self._waiting)

    async def _step(self) -> None:
        """Each job draws from its logits; those still going take one step of the model together."""
        going, tokens, now, paused = [], [], time.monotonic(), []
        for job in self._jobs:
            job.cancelled |= now > job.deadline
            if job.behind and not job.cancelled:
                paused.append(job)
                continue
            if not job.cancelled:
                drawn, pieces, records = job.lanes.draw(job.logits)
                self.metrics.characters += sum(len(p) for p in pieces)
                job.delivered += 1
                job.deliver(pieces, records)
                if not job.lanes.done:
                    going.append(job)
                    tokens.append(drawn)
                    continue
                job.delivered += 1
                job.deliver(job.lanes.flush(), None)
            job.deliver(None, None)
        self._jobs = going + paused
        self.metrics.active_lanes = sum(j.width for j in self._jobs)
        if not going:
            await asyncio.sleep(0.001 if paused else 0)  # every job waits for its reader
            return
        state = State(np.concatenate([j.state.h for j in going], axis=1), np.concatenate([j.state.c for j in going], axis=1))
        started = time.perf_counter()
        try:
            # Off the loop even for one request, though that costs it two thread hand-offs: a loop
            # that never idles hands each stream an event every turn, and anyio (Starlette's
            # disconnect watch) cancels a task only while what it awaits is pending, so the stream
            # of a client that has gone away would never be cancelled.
            step = self._stepper, self.model._step, np.concatenate(tokens), state
            logits, state = await asyncio.get_running_loop().run_in_executor(*step)  # (B, V), (L, B, H)
        except Exception:  # a model that fails mid-text (non-finite logits): its jobs end, the server stays
            for job in going:
                job.cancelled = True
            return
        self.metrics.steps += 1
        self.metrics.step_seconds += time.perf_counter() - started
        at = 0
        for job in going:
            lanes = slice(at, at + job.width)
            job.logits, job.state = logits[lanes], State(state.h[:, lanes], state.c[:, lanes])
            at += job.width

