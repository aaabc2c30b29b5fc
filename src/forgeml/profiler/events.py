"""What the profiler records: one :class:`FunctionEvent` per op call or range, averages per name, PyTorch's table.

Times are microseconds (floats, nanosecond resolution), memory is bytes, as in
``torch.autograd.profiler_util``, whose ``FunctionEvent``, ``FunctionEventAvg``
and ``EventList`` these mirror (the attributes a PyTorch user reads have the
same names; device times stay 0, see :mod:`forgeml.profiler`).
"""

from __future__ import annotations

import math

__all__ = ["EventList", "FunctionEvent", "FunctionEventAvg"]

# ``sort_by`` accepts PyTorch's names; "cuda"/"xpu" spellings read the device fields, as PyTorch's do.
SORT_KEYS = (
    "cpu_time",
    "cpu_time_total",
    "self_cpu_time_total",
    "device_time",
    "device_time_total",
    "self_device_time_total",
    "cpu_memory_usage",
    "self_cpu_memory_usage",
    "device_memory_usage",
    "self_device_memory_usage",
    "count",
    "flops",
)


class FunctionEvent:
    """One call of an op (``Mul``, its backward ``MulBackward``) or one ``record_function`` range."""

    __slots__ = (
        "id",
        "name",
        "thread",
        "start_ns",
        "end_ns",
        "input_shapes",
        "flops",
        "self_cpu_memory_usage",
        "device_memory_usage",
        "cpu_parent",
        "cpu_children",
        "is_user_annotation",
        "is_backward",
        "_children_ns",
        "_children_cpu_mem",
    )

    count = 1
    is_async = False
    device_time_total = 0.0
    self_device_time_total = 0.0
    device_time = 0.0
    node_id = -1

    def __init__(self, name: str, thread: int, *, is_user_annotation: bool = False, is_backward: bool = False):
        self.id = 0
        self.name = name
        self.thread = thread
        self.start_ns = self.end_ns = 0
        self.input_shapes = []
        self.flops = 0
        self.self_cpu_memory_usage = 0
        self.device_memory_usage = 0
        self.cpu_parent = None
        self.cpu_children = []
        self.is_user_annotation = is_user_annotation
        self.is_backward = is_backward
        self._children_ns = 0
        self._children_cpu_mem = 0

    @property
    def key(self) -> str:
        return self.name

    @property
    def cpu_time_total(self) -> float:
        """Microseconds from start to end, nested events included."""
        return (self.end_ns - self.start_ns) / 1000.0

    @property
    def self_cpu_time_total(self) -> float:
        """Microseconds less those of the events nested inside (ops inside a ``record_function`` range)."""
        return (self.end_ns - self.start_ns - self._children_ns) / 1000.0

    cpu_time = cpu_time_total

    @property
    def cpu_memory_usage(self) -> int:
        """Bytes allocated less bytes freed during the event, nested events included."""
        return self.self_cpu_memory_usage + self._children_cpu_mem

    @property
    def self_device_memory_usage(self) -> int:
        return self.device_memory_usage - sum(c.device_memory_usage for c in self.cpu_children)

    def __repr__(self) -> str:
        return (
            f"<FunctionEvent id={self.id} name={self.name} thread={self.thread} "
            f"cpu_time_total={_format_time(self.cpu_time_total)} "
            f"self_cpu_time_total={_format_time(self.self_cpu_time_total)} input_shapes={self.input_shapes} "
            f"cpu_memory_usage={self.cpu_memory_usage} flops={self.flops}>"
        )


class FunctionEventAvg:
    """The events of one name (and, with ``group_by_input_shape``, one list of input shapes), summed."""

    is_async = False
    node_id = -1

    def __init__(self) -> None:
        self.key = None
        self.count = 0
        self.cpu_time_total = 0.0
        self.self_cpu_time_total = 0.0
        self.device_time_total = 0.0
        self.self_device_time_total = 0.0
        self.cpu_memory_usage = 0
        self.self_cpu_memory_usage = 0
        self.device_memory_usage = 0
        self.self_device_memory_usage = 0
        self.flops = 0
        self.input_shapes = None
        self.is_user_annotation = False
        self.is_backward = False

    def add(self, other) -> FunctionEventAvg:
        if self.key is None:
            self.key = other.key
            self.input_shapes = other.input_shapes
            self.is_user_annotation = other.is_user_annotation
            self.is_backward = other.is_backward
        elif other.key != self.key:
            raise ValueError(f"cannot add an event named {other.key!r} to the average of {self.key!r}")
        return self._accumulate(other)

    def _accumulate(self, other) -> FunctionEventAvg:
        self.count += other.count
        self.cpu_time_total += other.cpu_time_total
        self.self_cpu_time_total += other.self_cpu_time_total
        self.device_time_total += other.device_time_total
        self.self_device_time_total += other.self_device_time_total
        self.cpu_memory_usage += other.cpu_memory_usage
        self.self_cpu_memory_usage += other.self_cpu_memory_usage
        self.device_memory_usage += other.device_memory_usage
        self.self_device_memory_usage += other.self_device_memory_usage
        self.flops += other.flops
        return self

    __iadd__ = add

    @property
    def cpu_time(self) -> float:
        """Average microseconds per call."""
        return self.cpu_time_total / self.count if self.count else 0.0

    @property
    def device_time(self) -> float:
        return self.device_time_total / self.count if self.count else 0.0

    def __repr__(self) -> str:
        return (
            f"<FunctionEventAvg key={self.key} count={self.count} "
            f"self_cpu_time={_format_time(self.self_cpu_time_total)} cpu_time={_format_time(self.cpu_time_total)} "
            f"input_shapes={self.input_shapes} cpu_memory_usage={self.cpu_memory_usage} flops={self.flops}>"
        )


class EventList(list):
    """A list of events (or of their averages) that prints PyTorch's summary table."""

    def __init__(self, events=(), *, profile_memory: bool = False, with_flops: bool = False, peak_memory=None):
        super().__init__(events)
        self.profile_memory = profile_memory
        self.with_flops = with_flops
        self.peak_memory = dict(peak_memory or {})  # {"cpu": bytes, "cuda": bytes}: shown under the table

    @property
    def self_cpu_time_total(self) -> float:
        """Microseconds: the sum of every event's self time (the time covered, without double counting)."""
        return sum(e.self_cpu_time_total for e in self)

    def key_averages(self, group_by_input_shape: bool = False) -> EventList:
        """One :class:`FunctionEventAvg` per name (per name and input shapes with ``group_by_input_shape``)."""
        groups: dict = {}
        for event in self:
            key = (event.key, str(event.input_shapes)) if group_by_input_shape else event.key
            avg = groups.get(key)
            if avg is None:
                avg = groups[key] = FunctionEventAvg()
            avg.add(event)
        return EventList(
            groups.values(),
            profile_memory=self.profile_memory,
            with_flops=self.with_flops,
            peak_memory=self.peak_memory,
        )

    def total_average(self) -> FunctionEventAvg:
        """Every event summed into one, keyed ``"Total"``."""
        total = FunctionEventAvg()
        total.key = "Total"
        for event in self:
            total._accumulate(event)
        return total

    def table(
        self,
        sort_by: str | None = None,
        row_limit: int = 100,
        max_name_column_width: int = 55,
        max_shapes_column_width: int = 80,
        header: str | None = None,
        top_level_events_only: bool = False,
        time_unit: str | None = None,
    ) -> str:
        """PyTorch's summary table: Name, Self CPU %, Self CPU, CPU total %, CPU total, CPU time avg, [CPU Mem,
        Self CPU Mem,] # of Calls[, Input Shapes][, Total FLOPs], rows sorted by ``sort_by`` (descending)."""
        return _build_table(
            self,
            sort_by=sort_by,
            row_limit=row_limit,
            max_name_column_width=max_name_column_width,
            max_shapes_column_width=max_shapes_column_width,
            header=header,
            top_level_events_only=top_level_events_only,
            time_unit=time_unit,
        )

    def export_chrome_trace(self, path) -> None:
        """Write these events (FunctionEvents, not averages) as a Chrome trace JSON file."""
        from .trace import write_chrome_trace

        write_chrome_trace(path, list(self), [], start_ns=min((e.start_ns for e in self), default=0))

    def __str__(self) -> str:
        return self.table()


# -- the table ------------------------------------------------------------------------------------------------
def _format_time(time_us: float) -> str:
    if time_us >= 1e6:
        return f"{time_us / 1e6:.3f}s"
    if time_us >= 1e3:
        return f"{time_us / 1e3:.3f}ms"
    return f"{time_us:.3f}us"


def _format_time_unit(time_us: float, time_unit: str | None) -> str:
    if time_unit == "s":
        return f"{time_us / 1e6:.3f}s"
    if time_unit == "ms":
        return f"{time_us / 1e3:.3f}ms"
    if time_unit == "us":
        return f"{time_us:.3f}us"
    if time_unit is not None:
        raise ValueError(f"time_unit must be 's', 'ms', 'us' or None, got {time_unit!r}")
    return _format_time(time_us)


def _format_share(time_us: float, total_us: float) -> str:
    return "NaN" if total_us == 0 else f"{time_us * 100.0 / total_us:.2f}%"


def format_memory(nbytes: int) -> str:
    """Bytes as PyTorch's table prints them (1024-based: ``1.50 Mb`` is written ``1.50 MB``)."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def _sort_attribute(sort_by: str) -> str:
    attr = sort_by.replace("cuda", "device").replace("xpu", "device")
    if attr not in SORT_KEYS:
        raise ValueError(f"table: cannot sort by {sort_by!r}; expected one of {', '.join(SORT_KEYS)}")
    return attr


def _build_table(events, *, sort_by, row_limit, max_name_column_width, max_shapes_column_width, header,
                 top_level_events_only, time_unit) -> str:  # fmt: skip
    if not events:
        return ""
    profile_memory = getattr(events, "profile_memory", False)
    peak = getattr(events, "peak_memory", None) or {}
    if sort_by is not None:
        attr = _sort_attribute(sort_by)
        events = sorted(events, key=lambda e: getattr(e, attr), reverse=True)
    has_device_mem = any(e.device_memory_usage for e in events)
    has_shapes = any(e.input_shapes for e in events)

    name_width = min(max(len(e.key) for e in events) + 4, max_name_column_width)
    shapes_width = min(max(len(str(e.input_shapes)) for e in events) + 4, max_shapes_column_width)
    width = 12
    headers = ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg"]
    widths = [name_width] + [width] * 5
    if profile_memory:
        headers += ["CPU Mem", "Self CPU Mem"]
        widths += [width, width]
        if has_device_mem:
            headers += ["CUDA Mem", "Self CUDA Mem"]
            widths += [width, width]
    headers.append("# of Calls")
    widths.append(width)
    if has_shapes:
        headers.append("Input Shapes")
        widths.append(shapes_width)
    with_flops = any(e.flops > 0 for e in events)
    if with_flops:
        scale, unit = _flops_scale(min(e.flops for e in events if e.flops > 0))
        headers.append(f"Total {unit}")
        widths.append(width)

    row_format = "".join("{:>" + str(w) + "}  " for w in widths)
    separator = "".join("-" * w + "  " for w in widths)
    line_length = sum(w + 2 for w in widths) - 2
    total_self = sum(e.self_cpu_time_total for e in events)

    lines = []
    if header is not None:
        lines += ["=" * line_length, header]
    if top_level_events_only:
        lines += ["=" * line_length, "This report only display top-level ops statistics"]
    lines += [separator, row_format.format(*headers), separator]
    shown = 0
    for e in events:
        if shown == row_limit:
            break
        if top_level_events_only and getattr(e, "cpu_parent", None) is not None:
            continue
        shown += 1
        name = e.key
        if len(name) >= max_name_column_width - 3:
            name = name[: max_name_column_width - 3] + "..."
        row = [
            name,
            _format_share(e.self_cpu_time_total, total_self),
            _format_time_unit(e.self_cpu_time_total, time_unit),
            _format_share(e.cpu_time_total, total_self),
            _format_time_unit(e.cpu_time_total, time_unit),
            _format_time_unit(e.cpu_time, time_unit),
        ]
        if profile_memory:
            row += [format_memory(e.cpu_memory_usage), format_memory(e.self_cpu_memory_usage)]
            if has_device_mem:
                row += [format_memory(e.device_memory_usage), format_memory(e.self_device_memory_usage)]
        row.append(e.count)
        if has_shapes:
            row.append(str(e.input_shapes)[:shapes_width])
        if with_flops:
            row.append("--" if e.flops <= 0 else f"{e.flops * scale:8.3f}")
        lines.append(row_format.format(*row))
    lines.append(separator)
    lines.append(f"Self CPU time total: {_format_time_unit(total_self, time_unit)}")
    if profile_memory and "cpu" in peak:
        lines.append(f"Peak CPU Mem (op outputs and saved tensors): {format_memory(peak['cpu'])}")
    if "cuda" in peak:
        lines.append(f"Peak CUDA Mem (memory pool): {format_memory(peak['cuda'])}")
    return "\n".join(lines) + "\n"


def _flops_scale(smallest: int) -> tuple[float, str]:
    units = ("FLOPs", "KFLOPs", "MFLOPs", "GFLOPs", "TFLOPs", "PFLOPs")
    step = int(max(0.0, min(math.log10(smallest) / 3, len(units) - 1.0)))
    return 10.0 ** (-3 * step), units[step]
