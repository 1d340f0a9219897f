"""Profiler: real stage timing of small torch work on the CPU, chunk stats, resume state, traces.

The CUDA-event path is exercised with a fake ``torch.cuda`` (no GPU here); everything else is real.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from mirage_cli.profiling import profiler as P


def _work(n: int = 160) -> torch.Tensor:
    """A little real torch work (matmuls) to time."""
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=g)  # [n, n]
    for _ in range(3):
        a = torch.tanh(a @ a.T / n)  # [n, n]
    return a


def _render_chunk(prof: P.Profiler, index: int, steps: int = 4) -> P.ChunkProfile:
    """The stage sequence the rollout runs for one chunk, with real small work in each stage."""
    prof.begin_chunk(index)
    with prof.stage(P.MEMORY_QUERY):
        _work(64)
    with prof.stage(P.DENOISE):
        for _ in range(steps):
            with prof.stage(P.DENOISE_STEP):
                _work(160)
    with prof.stage(P.DECODE):
        _work(128)
    with prof.stage(P.MP4_WRITE):
        _work(32)
    with prof.stage(P.MEMORY_INSERT):
        _work(32)
    with prof.stage(P.CHECKPOINT_WRITE):
        pass
    return prof.end_chunk(
        {
            "frames": 9 if index == 0 else 8,
            "cache_points": 100 * (index + 1),
            "cache_bytes": 12_000 * (index + 1),
            "memory_coverage": torch.tensor(0.5),
            "pinned_tokens": 12,
            "points_added": 100,
            "voxels_merged": 3,
        }
    )


def test_chunk_profile_from_real_stages():
    prof = P.Profiler("cpu")
    assert prof.timer == P.TIMER_PERF_COUNTER and prof.peak_memory_kind == P.PEAK_RSS
    with prof.stage(P.MODEL_LOAD):
        _work(64)
    with prof.stage(P.TEXT_ENCODING):
        _work(64)
    c0 = _render_chunk(prof, 0, steps=4)
    c1 = _render_chunk(prof, 1, steps=3)

    assert [c.index for c in prof.chunks] == [0, 1]
    assert c0.frames == 9 and c1.frames == 8
    assert set(c0.stages) == {P.MEMORY_QUERY, P.DENOISE, P.DENOISE_STEP, P.DECODE, P.MP4_WRITE, P.MEMORY_INSERT, P.CHECKPOINT_WRITE}
    assert P.TEXT_ENCODING not in c0.stages  # setup stages stay out of chunks
    assert len(c0.step_seconds) == 4 and len(c1.step_seconds) == 3
    assert c0.stage_calls[P.DENOISE_STEP] == 4 and c0.stage_calls[P.DENOISE] == 1
    assert all(s > 0 for s in c0.step_seconds)
    # inclusive nesting: steps inside denoise, every top-level stage inside the chunk's wall time
    assert sum(c0.step_seconds) == pytest.approx(c0.stages[P.DENOISE_STEP])
    assert c0.stages[P.DENOISE_STEP] <= c0.stages[P.DENOISE]
    top = sum(v for k, v in c0.stages.items() if k != P.DENOISE_STEP)
    assert top <= c0.wall_seconds
    # memory and the rollout's numbers
    assert c0.peak_memory_kind == P.PEAK_RSS
    assert c0.peak_memory_bytes > 10 * 2**20 and c0.peak_rss_bytes == c0.peak_memory_bytes
    assert (c1.cache_points, c1.cache_bytes, c1.pinned_tokens, c1.points_added) == (200, 24_000, 12, 100)
    assert isinstance(c1.memory_coverage, float) and c1.memory_coverage == 0.5
    assert c1.extra == {"voxels_merged": 3}

    assert prof.stage_parents[P.DENOISE_STEP] == P.DENOISE
    assert prof.stage_parents[P.DENOISE] is None
    setup = prof.setup_seconds()
    assert set(setup) == {P.MODEL_LOAD, P.TEXT_ENCODING} and all(v > 0 for v in setup.values())
    totals = prof.totals()
    assert totals[P.DENOISE] == pytest.approx(c0.stages[P.DENOISE] + c1.stages[P.DENOISE])
    assert totals[P.TEXT_ENCODING] == pytest.approx(setup[P.TEXT_ENCODING])
    json.dumps(prof.report_inputs())  # JSON-able as is


def test_peak_rss_sees_a_large_allocation():
    """The chunk's peak keeps an allocation that is gone by the chunk's end. Measured against the RSS
    after it was freed: on a busy machine the RSS before it can drift (the kernel drops file pages of a
    process, other tests' leftovers are collected), while unmapping 256 MiB gives them back at once.
    The 256 MiB are an anonymous mapping of their own, pages touched: a tensor's memory may come from
    heap space earlier tests in this worker left resident, which neither raises nor lowers the RSS."""
    import mmap

    size = 256 << 20
    prof = P.Profiler("cpu")
    prof.begin_chunk(0)
    with prof.stage(P.DEPTH_ESTIMATION):
        big = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):
            big[offset] = 1
        with_big = prof._rss()
    big.close()
    without = prof._rss()
    with prof.stage(P.DECODE):
        pass
    chunk = prof.end_chunk(frames=1)
    assert with_big - without > 200 * 2**20  # freed: the memory went back to the system
    assert chunk.peak_memory_bytes - without > 200 * 2**20


def test_stage_records_time_when_body_raises():
    prof = P.Profiler("cpu")
    prof.begin_chunk(0)
    with pytest.raises(ZeroDivisionError):
        with prof.stage(P.DECODE):
            raise ZeroDivisionError("inside the stage")
    chunk = prof.end_chunk(frames=0)
    assert chunk.stage_calls == {P.DECODE: 1}


def test_misuse_is_reported():
    prof = P.Profiler("cpu")
    with pytest.raises(RuntimeError, match="no chunk is open"):
        prof.end_chunk()
    prof.begin_chunk(0)
    with pytest.raises(RuntimeError, match="chunk 0 is still open"):
        prof.begin_chunk(1)
    with prof.stage(P.DENOISE):
        with pytest.raises(RuntimeError, match="'denoise' is still open"):
            prof.end_chunk()
    prof.end_chunk()


def test_state_dict_round_trip_and_resume():
    first = P.Profiler("cpu")
    with first.stage(P.MODEL_LOAD):
        _work(32)
    for i in range(3):
        _render_chunk(first, i, steps=2)
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON

    # the resumed process loads its model again, then loads the state, then redoes chunk 2
    second = P.Profiler("cpu")
    with second.stage(P.MODEL_LOAD):
        _work(32)
    second.load_state_dict(state)
    assert [c.to_dict() for c in second.chunks] == [c.to_dict() for c in first.chunks]
    assert second.stage_parents == first.stage_parents
    setup_first = first.setup_seconds()[P.MODEL_LOAD]
    assert second.setup_seconds()[P.MODEL_LOAD] > setup_first  # both loads counted
    assert second.setup_calls()[P.MODEL_LOAD] == 2
    second.add_setup_seconds("weights_download_check", 0.5)
    assert second.setup_seconds()["weights_download_check"] == 0.5
    assert second.stage_parents["weights_download_check"] is None

    redone = _render_chunk(second, 2, steps=5)
    _render_chunk(second, 3, steps=2)
    assert [c.index for c in second.chunks] == [0, 1, 2, 3]
    assert second.chunks[2] is redone and len(second.chunks[2].step_seconds) == 5

    with pytest.raises(ValueError, match="version"):
        P.Profiler("cpu").load_state_dict({"version": 99})


def test_chunk_profile_dict_round_trip():
    c = P.ChunkProfile(index=3, frames=8, wall_seconds=1.5, stages={"denoise": 1.0}, stage_calls={"denoise": 1},
                       step_seconds=[0.5, 0.5], peak_memory_bytes=10, peak_rss_bytes=10, cache_points=5,
                       memory_coverage=0.25, extra={"k": 1})
    d = c.to_dict()
    assert P.ChunkProfile.from_dict(json.loads(json.dumps(d))) == c
    d["unknown_number"] = 7
    assert P.ChunkProfile.from_dict(d).extra == {"k": 1, "unknown_number": 7}


def test_trace_chunk_writes_chrome_trace(tmp_path):
    with P.trace_chunk(tmp_path / "trace", chunk_index=2, device="cpu") as path:
        _work(96)
    assert path == tmp_path / "trace" / "trace_chunk_0002.json" and path.is_file()
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    assert all("ph" in e and "name" in e for e in events)
    assert any(e["name"] == "aten::mm" for e in events)
    assert not list((tmp_path / "trace").glob(".*"))  # no temporary file left behind


class _FakeEvent:
    """Stands in for torch.cuda.Event (no GPU here): remembers the host time it was recorded."""

    clock = [0.0]

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        self.t = None

    def record(self, stream=None):
        _FakeEvent.clock[0] += 0.25  # each record advances a fake GPU clock by 250 ms
        self.t = _FakeEvent.clock[0]

    def elapsed_time(self, end: _FakeEvent) -> float:
        assert self.t is not None and end.t is not None, "event resolved before it was recorded"
        return (end.t - self.t) * 1000.0


def test_cuda_path_resolves_events_lazily(monkeypatch):
    """CUDA timing with a fake torch.cuda: events per stage, one synchronize per chunk end."""
    calls = SimpleNamespace(sync=0, reset=0)

    def sync(device=None):
        calls.sync += 1

    def reset(device=None):
        calls.reset += 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 123_456_789)

    prof = P.Profiler("cuda")
    assert prof.timer == P.TIMER_CUDA_EVENTS and prof.device == torch.device("cuda", 0)
    with prof.stage(P.TEXT_ENCODING):
        pass
    prof.begin_chunk(0)
    syncs_at_begin = calls.sync
    with prof.stage(P.DENOISE):
        for _ in range(3):
            with prof.stage(P.DENOISE_STEP):
                pass
    assert calls.sync == syncs_at_begin  # nothing synchronises inside the step loop
    chunk = prof.end_chunk(frames=5)
    assert calls.sync == syncs_at_begin + 1 and calls.reset == 1
    assert chunk.step_seconds == pytest.approx([0.25, 0.25, 0.25])
    assert chunk.stages[P.DENOISE] == pytest.approx(7 * 0.25)  # start, 3 x (start, end), end
    assert chunk.peak_memory_bytes == 123_456_789 and chunk.peak_memory_kind == P.PEAK_CUDA
    assert prof.setup_seconds() == {P.TEXT_ENCODING: pytest.approx(0.25)}


def test_add_chunk_seconds_extends_a_finished_chunk():
    from mirage_cli.profiling.profiler import Profiler

    prof = Profiler("cpu")
    prof.begin_chunk(0)
    with prof.stage("decode"):
        pass
    prof.end_chunk({"frames": 5})
    wall = prof.chunks[0].wall_seconds
    prof.add_chunk_seconds(0, "checkpoint_write", 0.25)
    c = prof.chunks[0]
    assert c.stages["checkpoint_write"] == 0.25 and c.stage_calls["checkpoint_write"] == 1
    assert c.wall_seconds == pytest.approx(wall + 0.25)
    with pytest.raises(KeyError):
        prof.add_chunk_seconds(3, "checkpoint_write", 0.1)
