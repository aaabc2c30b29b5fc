"""``forgeml.profiler``: PyTorch's profiler API over ForgeML's ops.

>>> from forgeml.profiler import profile, record_function, ProfilerActivity
>>> with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
...     with record_function("model_inference"):
...         model(inputs)
>>> print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10))
>>> prof.export_chrome_trace("trace.json")

Nothing is hooked into the op path while no profiler runs (autograd tests an
empty list of observers, as it always does). See :mod:`forgeml.profiler.profiler`
for how time, memory and FLOPs are measured.
"""

from .events import EventList, FunctionEvent, FunctionEventAvg
from .profiler import ProfilerActivity, profile, record_function, supported_activities

__all__ = [
    "EventList",
    "FunctionEvent",
    "FunctionEventAvg",
    "ProfilerActivity",
    "profile",
    "record_function",
    "supported_activities",
]
