"""Dynamic batching for ``asr serve``: segments of concurrent requests share one model call.

Each request's audio is cut into segments (the long-audio segmentation of ``asr transcribe``);
the segments wait in one queue. A model worker takes the first waiting segment, waits at most
``max_wait_ms`` for more (up to ``max_batch`` segments or ``max_batch_seconds`` of audio), runs
them as one batch in a thread (off the event loop) and hands each request its results. While
the model is busy, new segments pile up and the next batch takes them all at once, so batches
grow with the load and an idle server answers a lone request after ``max_wait_ms`` at most.

Memory stays bounded: requests are admitted up to ``max_queue`` (the server answers 503 past
that) and each request keeps at most ``max_batch`` of its segments in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("asr.serve")


@dataclass(frozen=True)
class BatchOptions:
    max_batch: int = 8  # segments decoded in one model call (1: no batching)
    max_wait_ms: float = 50.0  # longest the first waiting segment waits for others to join it
    max_batch_seconds: float = 240.0  # audio seconds in one model call (bounds memory)
    workers: int = 1  # model calls running at once (threads; torch runs each on its own threads)


@dataclass
class _Item:
    wav: np.ndarray  # (samples,) float32 at the model's rate
    offset: float  # seconds from the start of the request's recording
    timestamps: bool  # word times wanted
    future: asyncio.Future
    nbest: int = 0  # alternatives wanted (0: the model's own options)


@dataclass
class BatchStats:
    calls: int = 0  # model calls made
    segments: int = 0  # segments decoded
    audio_seconds: float = 0.0  # audio decoded
    busy_seconds: float = 0.0  # wall time inside model calls
    sizes: list[int] = dataclasses.field(default_factory=list)  # batch sizes of the last 1000 calls

    def to_dict(self) -> dict:
        mean = self.segments / self.calls if self.calls else 0.0
        return {"model_calls": self.calls, "segments": self.segments,
                "audio_seconds": round(self.audio_seconds, 2), "busy_seconds": round(self.busy_seconds, 2),
                "mean_batch_size": round(mean, 2)}


class Batcher:
    """Collects segments from concurrent requests into batched ``model.transcribe_batch`` calls.

    Start it inside the running event loop (``await start()``), stop it with ``await stop()``.
    """

    def __init__(self, model, opts: BatchOptions = BatchOptions()):
        self.model = model
        self.opts = opts
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Item] | None = None
        self._tasks: list[asyncio.Task] = []
        self._pool = ThreadPoolExecutor(max(1, opts.workers), thread_name_prefix="asr-model")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(max(1, self.opts.workers))]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def waiting(self) -> int:
        """Segments queued and not yet in a model call."""
        return self._queue.qsize() if self._queue is not None else 0

    def submit(self, wav: np.ndarray, offset: float, timestamps: bool, nbest: int = 0) -> asyncio.Future:
        """Queue one segment; the future gives its Transcript (word times shifted by ``offset``;
        ``nbest`` > 0: up to that many alternatives, else the model's own ``options.nbest``)."""
        assert self._queue is not None, "Batcher.start() was not awaited"
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(wav, offset, timestamps, fut, nbest))
        return fut

    def _call(self, items: list[_Item]) -> list:
        """One batch through the model (in a pool thread): one call per distinct ``nbest``, so
        a request's alternatives never depend on the requests it shares a batch with."""
        outs: list = [None] * len(items)
        for n in sorted({i.nbest for i in items}):
            idx = [k for k, i in enumerate(items) if i.nbest == n]
            opts = dataclasses.replace(self.model.options, nbest=n) if n else None
            got = self.model.transcribe_batch([items[k].wav for k in idx], [items[k].timestamps for k in idx],
                                              [items[k].offset for k in idx], opts)
            for k, t in zip(idx, got):
                outs[k] = t
        return outs

    async def _collect(self) -> list[_Item]:
        """The next batch: the first live item, then whatever joins within ``max_wait_ms``."""
        q = self._queue
        items: list[_Item] = []
        seconds = 0.0
        rate = self.model.sample_rate
        loop = asyncio.get_running_loop()
        deadline = None
        while len(items) < self.opts.max_batch and seconds < self.opts.max_batch_seconds:
            if not items:
                item = await q.get()
                deadline = loop.time() + self.opts.max_wait_ms / 1000
            elif not q.empty():
                item = q.get_nowait()
            else:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(q.get(), left)
                except asyncio.TimeoutError:
                    break
            if item.future.done():  # its request timed out or went away
                continue
            items.append(item)
            seconds += item.wav.size / rate
        return items

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            t0 = time.perf_counter()
            try:
                outs = await loop.run_in_executor(self._pool, self._call, items)
            except Exception as e:  # a model failure fails this batch's requests, not the server
                log.exception("model call failed on a batch of %d segments", len(items))
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(RuntimeError(f"the model failed on this batch ({e})"))
                continue
            s = self.stats
            s.calls += 1
            s.segments += len(items)
            s.audio_seconds += sum(i.wav.size for i in items) / self.model.sample_rate
            s.busy_seconds += time.perf_counter() - t0
            s.sizes = (s.sizes + [len(items)])[-1000:]
            for i, out in zip(items, outs):
                if not i.future.done():
                    i.future.set_result(out)


async def transcribe_segments(batcher: Batcher, segments: Iterator[tuple[float, np.ndarray]],
                              timestamps: bool, nbest: int = 0):
    """Transcribe one recording through the batcher and stitch its segments.

    Args:
        batcher: the running Batcher.
        segments: (start seconds, (samples,) float32) pieces of the recording, in order
            (``asr.transcribe.iter_segments``); advanced in a thread, since it decodes audio.
        timestamps: fill the word times.
        nbest: > 0: also the recording's ``nbest`` best (text, score) in ``alternatives``.

    Returns:
        an ``asr.transcribe.Transcript`` with text, words (if asked), segments, duration and
        (``nbest``) alternatives.

    Raises:
        AudioError: from the segment iterator (unreadable or non-finite audio).
    """
    from asr.decoding import combine_nbest
    from asr.transcribe import Transcript

    rate = batcher.model.sample_rate
    in_flight = max(1, batcher.opts.max_batch)  # bounds this request's memory
    pending: list[tuple[float, np.ndarray, asyncio.Future]] = []
    done: list[tuple[float, float, object]] = []
    sentinel = object()
    try:
        while True:
            nxt = await asyncio.to_thread(next, segments, sentinel)
            if nxt is sentinel:
                break
            off, wav = nxt
            pending.append((off, wav, batcher.submit(wav, off, timestamps, nbest)))
            if len(pending) >= in_flight:
                off0, wav0, fut = pending.pop(0)
                done.append((off0, off0 + wav0.size / rate, await fut))
        for off, wav, fut in pending:
            done.append((off, off + wav.size / rate, await fut))
    finally:  # a timeout or an audio error: the queued segments are skipped by the worker
        for _, _, fut in pending:
            fut.cancel()
    out = Transcript("")
    texts = []
    for start, end, t in done:
        out.segments.append({"start": round(start, 3), "end": round(end, 3), "text": t.text})
        if t.text:
            texts.append(t.text)
        out.words.extend(t.words)
        out.tokens.extend(t.tokens)
        out.score += t.score
        out.duration = max(out.duration, end)
    out.text = " ".join(texts)
    if nbest:
        out.alternatives = combine_nbest([t.alternatives for _, _, t in done], nbest)
    return out
