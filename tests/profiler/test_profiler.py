"""``forgeml.profiler``: calls, self and total times, ranges, PyTorch's table, the Chrome trace, FLOPs, shapes, memory,
and that nothing stays hooked into the op path once a profiler is done."""

import json
import threading
from collections import Counter

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.autograd.function import OP_OBSERVERS
from forgeml.profiler import EventList, ProfilerActivity, profile, record_function
from forgeml.profiler import profiler as profiler_module


@pytest.fixture(autouse=True)
def _no_profiler_left_behind():
    assert OP_OBSERVERS == [] and profiler_module._ACTIVE == []
    yield
    assert OP_OBSERVERS == [], "a profiler left its observer on the op path"
    assert profiler_module._ACTIVE == []


def _mlp():
    fm.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _train_step(model, x):
    loss = model(x).sum()
    loss.backward()
    return loss


def _counts(prof) -> Counter:
    return Counter({e.key: e.count for e in prof.key_averages()})


# -- calls and times ----------------------------------------------------------------------------------------------
def test_counts_calls_of_a_tiny_model_forward_and_backward():
    model, x = _mlp(), fm.randn(5, 4)
    with profile() as prof:
        _train_step(model, x)
        _train_step(model, x)
    assert _counts(prof) == {
        "Linear": 4,
        "Relu": 2,
        "Sum": 2,
        "SumBackward": 2,
        "LinearBackward": 4,
        "ReluBackward": 2,
    }
    backward = {e.key for e in prof.events() if e.is_backward}
    assert backward == {"SumBackward", "LinearBackward", "ReluBackward"}


def test_self_time_is_at_most_total_time():
    model, x = _mlp(), fm.randn(5, 4)
    with profile() as prof, record_function("step"):
        _train_step(model, x)
    for event in list(prof.events()) + list(prof.key_averages()):
        assert 0 <= event.self_cpu_time_total <= event.cpu_time_total, event
    step = next(e for e in prof.events() if e.key == "step")
    assert step.self_cpu_time_total < step.cpu_time_total  # the ops inside are not its own
    assert prof.self_cpu_time_total == pytest.approx(sum(e.self_cpu_time_total for e in prof.events()))
    assert prof.self_cpu_time_total == pytest.approx(step.cpu_time_total)  # everything ran inside "step"


def test_nested_record_functions_contain_their_ops():
    x = fm.randn(3, 3)
    with profile() as prof:
        with record_function("outer"):
            y = x.exp()
            with record_function("inner"):
                z = y * 2
                z = z + 1
        w = z.sum()
    assert w is not None
    events = {e.key: e for e in prof.events() if e.key in ("outer", "inner", "Exp", "Sum")}
    outer, inner = events["outer"], events["inner"]
    assert inner.cpu_parent is outer
    assert [c.key for c in inner.cpu_children] == ["Mul", "Add"]
    assert [c.key for c in outer.cpu_children] == ["Exp", "inner"]
    assert events["Sum"].cpu_parent is None and events["Exp"].cpu_parent is outer
    assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns
    children_us = sum(c.cpu_time_total for c in outer.cpu_children)
    assert outer.self_cpu_time_total == pytest.approx(outer.cpu_time_total - children_us)
    assert inner.self_cpu_time_total == pytest.approx(
        inner.cpu_time_total - sum(c.cpu_time_total for c in inner.cpu_children)
    )
    assert outer.is_user_annotation and not events["Exp"].is_user_annotation


def test_record_function_as_decorator_and_without_profiler():
    @record_function("helper")
    def helper(t):
        return t * 3

    x = fm.ones(2)
    assert helper(x).tolist() == [3.0, 3.0]  # no profiler: nothing recorded, nothing fails
    with profile() as prof:
        helper(helper(x))
    helpers = [e for e in prof.events() if e.key == "helper"]
    assert len(helpers) == 2
    assert all([c.key for c in h.cpu_children] == ["Mul"] for h in helpers)


def test_user_function_is_one_op():
    class Cube(fm.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x * x

    x = fm.randn(4, requires_grad=True)
    with profile() as prof:
        Cube.apply(x).sum().backward()
    assert _counts(prof) == {"Cube": 1, "Sum": 1, "SumBackward": 1, "CubeBackward": 1}


def test_ops_on_other_threads_are_recorded_on_their_thread():
    x = fm.ones(3)
    with profile() as prof:
        worker = threading.Thread(target=x.exp)
        worker.start()
        worker.join()
        x.log()
    threads = {e.key: e.thread for e in prof.events()}
    assert threads["Exp"] != threads["Log"]
    assert threads["Log"] == threading.get_native_id()


# -- the table -------------------------------------------------------------------------------------------------------
def test_table_has_pytorch_columns_rows_and_order():
    model, x = _mlp(), fm.randn(16, 4)
    with profile() as prof:
        with record_function("forward"):
            loss = model(x).sum()
        loss.backward()
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=20)
    header = [h.strip() for h in table.splitlines()[1].split("  ") if h.strip()]
    assert header == ["Name", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg", "# of Calls"]
    names = [line.split()[0] for line in table.splitlines()[3:-2]]
    expected = [e.key for e in sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)]
    assert names == expected
    assert set(names) == {"forward", "Linear", "Relu", "Sum", "SumBackward", "LinearBackward", "ReluBackward"}
    assert table.splitlines()[-1].startswith("Self CPU time total: ")
    linear_row = next(line for line in table.splitlines() if line.split() and line.split()[0] == "Linear")
    assert linear_row.split()[-1] == "2"  # # of Calls

    limited = averages.table(sort_by="count", row_limit=3)
    counts = [int(line.split()[-1]) for line in limited.splitlines()[3:-2]]
    assert len(counts) == 3 and counts == sorted(counts, reverse=True)
    assert averages.table(sort_by="cpu_time_total") != ""
    assert averages.table(sort_by="cuda_time_total")  # PyTorch's device spellings are accepted
    with pytest.raises(ValueError, match="cannot sort by 'speed'"):
        averages.table(sort_by="speed")


def test_table_percentages_add_up():
    x = fm.randn(64, 64)
    with profile() as prof:
        for _ in range(3):
            (x @ x).relu()
    table = prof.key_averages().table(sort_by="self_cpu_time_total")
    shares = [float(line.split()[1].rstrip("%")) for line in table.splitlines()[3:-2]]
    assert sum(shares) == pytest.approx(100.0, abs=0.05)


def test_table_shows_shapes_memory_and_flops_columns_when_recorded():
    a, b = fm.randn(8, 16), fm.randn(16, 4)
    with profile(record_shapes=True, profile_memory=True, with_flops=True) as prof:
        (a @ b).exp()
    table = prof.key_averages().table()
    header = table.splitlines()[1]
    for column in ("CPU Mem", "Self CPU Mem", "# of Calls", "Input Shapes", "Total KFLOPs"):
        assert column in header
    matmul_row = next(line for line in table.splitlines() if line.strip().startswith("Matmul"))
    assert "[[8, 16], [16, 4]]" in matmul_row
    assert "128 B" in matmul_row  # 8 x 4 float32
    assert "1.024" in matmul_row  # 2 * 8*4 * 16 = 1024 FLOPs, in KFLOPs
    assert "Peak CPU Mem" in table


def test_str_of_event_list_is_the_table():
    with profile() as prof:
        fm.ones(2).exp()
    averages = prof.key_averages()
    assert isinstance(averages, EventList)
    assert str(averages) == averages.table()
    assert EventList().table() == ""


# -- the Chrome trace --------------------------------------------------------------------------------------------------
def test_chrome_trace_is_valid_json_with_matching_events(tmp_path):
    model, x = _mlp(), fm.randn(5, 4)
    with profile(record_shapes=True, with_flops=True) as prof, record_function("train_step"):
        _train_step(model, x)
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())
    complete = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    events = list(prof.events())
    assert [e["name"] for e in complete] == [e.key for e in events]
    for item, event in zip(complete, events):
        assert isinstance(item["ts"], (int, float)) and item["dur"] >= 0
        assert item["dur"] == pytest.approx(event.cpu_time_total, abs=1e-3)
        assert item["pid"] and item["tid"] == event.thread
        assert item["cat"] == ("user_annotation" if event.key == "train_step" else "cpu_op")
    step = next(e for e in complete if e["name"] == "train_step")
    for item in complete:  # every op lies inside the range, on the time line
        assert step["ts"] <= item["ts"] and item["ts"] + item["dur"] <= step["ts"] + step["dur"] + 1e-3
    linear = next(e for e in complete if e["name"] == "Linear")
    assert linear["args"]["Input Dims"] == [[5, 4], [8, 4], [8]]
    assert linear["args"]["flops"] == 2 * 5 * 4 * 8
    assert any(e["ph"] == "M" and e["name"] == "thread_name" for e in trace["traceEvents"])
    assert trace["displayTimeUnit"] == "ms"


def test_chrome_trace_has_memory_events(tmp_path):
    x = fm.randn(100, 100)
    with profile(profile_memory=True) as prof:
        y = x.exp()
        del y  # freed inside the profile
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(path)
    trace = json.loads(path.read_text())["traceEvents"]
    memory = [e for e in trace if e["name"] == "[memory]"]
    assert [m["args"]["Bytes"] for m in memory] == [40000, -40000]
    counters = [e for e in trace if e["ph"] == "C"]
    assert [c["args"]["Allocated"] for c in counters] == [40000, 0]


# -- FLOPs and shapes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("a_shape", "b_shape", "mnk"), [((6, 5), (5, 7), (6, 7, 5)), ((3, 6, 5), (5, 7), (18, 7, 5))])
def test_matmul_flops(a_shape, b_shape, mnk):
    a = fm.randn(*a_shape, requires_grad=True)
    b = fm.randn(*b_shape, requires_grad=True)
    with profile(with_flops=True) as prof:
        (a @ b).sum().backward()
    m, n, k = mnk
    flops = {e.key: e.flops for e in prof.events()}
    assert flops["Matmul"] == 2 * m * n * k
    assert flops["MatmulBackward"] == 2 * (2 * m * n * k)  # one product per input that needs a gradient
    assert flops["Sum"] == 0
    a.requires_grad_(False)
    with profile(with_flops=True) as prof:
        (a @ b).sum().backward()
    assert {e.key: e.flops for e in prof.events()}["MatmulBackward"] == 2 * m * n * k


def test_linear_and_conv_flops():
    x = fm.randn(4, 3, 10, 10)
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    fc = nn.Linear(20, 6)
    with profile(with_flops=True) as prof:
        conv(x)
        fc(fm.randn(5, 20))
    flops = {e.key: e.flops for e in prof.events()}
    assert flops["Conv2d"] == 2 * (4 * 8 * 10 * 10) * (3 * 3 * 3)
    assert flops["Linear"] == 2 * 5 * 20 * 6


def test_no_flops_unless_asked():
    a = fm.randn(3, 3)
    with profile() as prof:
        a @ a
    assert all(e.flops == 0 for e in prof.events())
    assert "FLOPs" not in prof.key_averages().table()


def test_shapes_recorded_forward_and_backward_and_grouped():
    a = fm.randn(2, 3, requires_grad=True)
    with profile(record_shapes=True) as prof:
        (a * 2).sum().backward()
        (fm.randn(4, 3) * 2).sum()
    muls = [e for e in prof.events() if e.key == "Mul"]
    assert [m.input_shapes for m in muls] == [[[2, 3], []], [[4, 3], []]]
    mul_backward = next(e for e in prof.events() if e.key == "MulBackward")
    assert mul_backward.input_shapes == [[2, 3]]  # the incoming gradient
    grouped = prof.key_averages(group_by_input_shape=True)
    assert sorted(str(e.input_shapes) for e in grouped if e.key == "Mul") == ["[[2, 3], []]", "[[4, 3], []]"]
    assert len([e for e in prof.key_averages() if e.key == "Mul"]) == 1
    with profile() as prof:
        a * 2
    assert prof.events()[0].input_shapes == []


# -- memory ------------------------------------------------------------------------------------------------------------
def test_peak_memory_covers_the_largest_output():
    x = fm.randn(64, 32)
    w = fm.randn(32, 256, requires_grad=True)
    with profile(profile_memory=True) as prof:
        h = (x @ w).relu()
        h.sum().backward()
    largest = 64 * 256 * 4
    assert prof.peak_memory() >= largest
    matmul = next(e for e in prof.events() if e.key == "Matmul")
    assert matmul.self_cpu_memory_usage == largest
    assert matmul.cpu_memory_usage == largest


def test_views_add_no_memory_and_frees_are_counted():
    x = fm.randn(50, 40)
    with profile(profile_memory=True) as prof:
        with record_function("scope"):
            y = x * 2  # 8000 bytes made
            v = y.reshape(2000)  # a view: nothing made
            t = y.T
            del y, v, t  # the storage goes: freed inside "scope"
        z = x + 1
    events = {e.key: e for e in prof.events()}
    assert events["Mul"].self_cpu_memory_usage == 8000
    assert events["ViewAs"].self_cpu_memory_usage == 0  # reshape
    assert events["Permute"].self_cpu_memory_usage == 0  # .T
    assert events["scope"].self_cpu_memory_usage == -8000
    assert events["scope"].cpu_memory_usage == 0  # made and freed inside
    assert prof.peak_memory() == 8000  # z is made after y's storage went: 8000 bytes at most at once
    assert z is not None


def test_peak_memory_needs_profile_memory():
    with profile() as prof:
        fm.ones(2).exp()
    with pytest.raises(RuntimeError, match="profile_memory=True"):
        prof.peak_memory()
    with profile(profile_memory=True) as prof:
        fm.ones(2).exp()
    with pytest.raises(ValueError, match=r"cuda needs ProfilerActivity\.CUDA"):
        prof.peak_memory("cuda")


# -- the op path, before, during and after -----------------------------------------------------------------------------------
def test_observer_only_while_profiling():
    assert OP_OBSERVERS == []
    with profile() as prof:
        assert len(OP_OBSERVERS) == 1
        fm.ones(2).exp()
    assert OP_OBSERVERS == []
    prof.start()
    assert len(OP_OBSERVERS) == 1
    prof.stop()
    prof.stop()  # stopping twice is harmless
    assert OP_OBSERVERS == []


def test_no_observer_left_after_an_exception():
    with pytest.raises(ZeroDivisionError), profile():
        fm.ones(2).exp()
        1 / 0
    assert OP_OBSERVERS == []
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"), profile() as prof:
        fm.ones(2, 3) @ fm.ones(2, 3)  # the op itself raises, inside the observer
    assert OP_OBSERVERS == []
    assert [e.key for e in prof.events()] == []  # argument checks fail before the op is applied

    class Boom(fm.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            raise ArithmeticError("inside the op")

    with pytest.raises(ArithmeticError, match="inside the op"), profile() as prof:
        Boom.apply(fm.ones(2))
    assert OP_OBSERVERS == []
    assert [e.key for e in prof.events()] == ["Boom"]  # the call is recorded, up to where it raised
    with pytest.raises(ValueError, match="boom"), profile() as prof, record_function("failing"):
        fm.ones(2).exp()
        raise ValueError("boom")
    assert [e.key for e in prof.events()] == ["failing", "Exp"]


def test_nested_profilers_innermost_sees_the_ops():
    with profile() as outer:
        fm.ones(2).exp()
        with profile() as inner:
            fm.ones(2).log()
        fm.ones(2).sin()
    assert [e.key for e in inner.events()] == ["Log"]
    assert [e.key for e in outer.events()] == ["Exp", "Sin"]


def test_results_need_a_finished_run():
    prof = profile()
    with pytest.raises(RuntimeError, match="has not run yet"):
        prof.key_averages()
    with prof:
        with pytest.raises(RuntimeError, match="still running"):
            prof.events()
        with pytest.raises(RuntimeError, match="already running"):
            prof.start()


def test_activities_and_on_trace_ready():
    seen = []
    with profile(activities=[ProfilerActivity.CPU], on_trace_ready=seen.append) as prof:
        fm.ones(2).exp()
    assert seen == [prof]
    with pytest.raises(TypeError, match="ProfilerActivity"):
        profile(activities=["cpu"])
    with pytest.warns(UserWarning, match="no CUDA device"):
        profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])


def test_cuda_activity_synchronises_and_measures_the_pool(checked_cuda):
    """On the CuPy stand-in: the CUDA activity syncs around ops and reads the memory pool (a GPU runs the same code)."""
    x = fm.randn(32, 32, device="cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], profile_memory=True) as prof:
        y = x @ x
    matmul = next(e for e in prof.events() if e.key == "Matmul")
    assert matmul.device_memory_usage == 32 * 32 * 4
    assert matmul.self_cpu_memory_usage == 0  # device arrays are not counted as host memory
    assert prof.peak_memory("cuda") >= 2 * 32 * 32 * 4
    assert "CUDA Mem" in prof.key_averages().table()
    assert y.device == "cuda:0"


def test_events_are_plain_data():
    x = fm.randn(3)
    with profile(record_shapes=True) as prof:
        x.exp()
    (event,) = prof.events()
    assert event.id == 1 and event.name == event.key == "Exp" and event.count == 1
    assert event.cpu_time == event.cpu_time_total > 0
    assert event.device_time_total == 0
    assert "Exp" in repr(event)
    total = prof.events().total_average()
    assert total.key == "Total" and total.count == 1
    assert np.isclose(total.cpu_time_total, event.cpu_time_total)
