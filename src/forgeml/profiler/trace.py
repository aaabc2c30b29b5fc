"""The Chrome trace format (``chrome://tracing``, https://ui.perfetto.dev): what ``export_chrome_trace`` writes.

Each op call and ``record_function`` range is a complete event (``"ph": "X"``)
with ``ts`` and ``dur`` in microseconds from the start of profiling, on the
thread that ran it; its ``args`` hold the input shapes and FLOPs when they were
recorded. With ``profile_memory``, every allocation and release is a
``[memory]`` instant event (``"ph": "i"``, as PyTorch writes them) and the bytes
in use a counter track (``"ph": "C"``) that Perfetto draws as a graph.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["chrome_trace", "write_chrome_trace"]

_DEVICE_TYPE = {"cpu": 0, "cuda": 1}  # c10::DeviceType, as PyTorch's trace names it


def chrome_trace(events, memory_records, *, start_ns: int, base_time_ns: int = 0) -> dict:
    """The trace as a dict: ``events`` are FunctionEvents, ``memory_records`` ``(ns, bytes, in use, tid, device)``."""
    pid = os.getpid()

    def us(ns: int) -> float:
        return round((ns - start_ns) / 1000.0, 3)

    trace = []
    threads = set()
    for event in events:
        threads.add(event.thread)
        args = {"External id": event.id}
        if event.input_shapes:
            args["Input Dims"] = event.input_shapes
        if event.flops:
            args["flops"] = event.flops
        if event.is_backward:
            args["Fwd/Bwd"] = "backward"
        trace.append(
            {
                "ph": "X",
                "cat": "user_annotation" if event.is_user_annotation else "cpu_op",
                "name": event.name,
                "pid": pid,
                "tid": event.thread,
                "ts": us(event.start_ns),
                "dur": round((event.end_ns - event.start_ns) / 1000.0, 3),
                "args": args,
            }
        )
    for ns, nbytes, in_use, tid, device in memory_records:
        threads.add(tid)
        ts = us(ns)
        trace.append(
            {
                "ph": "i",
                "s": "t",
                "cat": "cpu_instant_event",
                "name": "[memory]",
                "pid": pid,
                "tid": tid,
                "ts": ts,
                "args": {"Bytes": nbytes, "Total Allocated": in_use, "Device Type": _DEVICE_TYPE[device]},
            }
        )
        trace.append(
            {"ph": "C", "name": f"{device.upper()} Memory", "pid": pid, "ts": ts, "args": {"Allocated": in_use}}
        )
    trace.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": "forgeml"}})
    for tid in sorted(threads):
        trace.append(
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": f"thread {tid} (python)"}}
        )
    return {
        "schemaVersion": 1,
        "traceEvents": trace,
        "displayTimeUnit": "ms",
        "baseTimeNanoseconds": base_time_ns,
        "traceName": "forgeml",
    }


def write_chrome_trace(path, events, memory_records, *, start_ns: int, base_time_ns: int = 0) -> None:
    """Write :func:`chrome_trace` to ``path`` as JSON."""
    trace = chrome_trace(events, memory_records, start_ns=start_ns, base_time_ns=base_time_ns)
    Path(path).write_text(json.dumps(trace))
