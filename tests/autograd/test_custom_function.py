"""User-defined ``forgeml.autograd.Function``: forward/backward, ctx, several outputs, error handling,
``mark_non_differentiable``, checked with ``gradcheck`` and against ``torch.autograd.Function``."""

import numpy as np
import pytest

import forgeml as fm
from forgeml.autograd import GradcheckError, gradcheck
from tests.oracle import LIBS, arr, assert_same, both

torch = pytest.importorskip("torch")


# -- function factories: the same definition for ForgeML and torch ----------------------------------------------
def make_cube(lib):
    class ScaledCube(lib.autograd.Function):
        """k * x**3, with k a plain Python number."""

        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            ctx.forward_needs = tuple(ctx.needs_input_grad)
            return x**3 * k

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x**2 * ctx.k, None

    return ScaledCube


def make_prod_sum(lib):
    class ProdSum(lib.autograd.Function):
        """Two outputs: a*b and a+b."""

        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b, a + b

        @staticmethod
        def backward(ctx, g_prod, g_sum):
            a, b = ctx.saved_tensors
            ctx.received = (g_prod.clone(), g_sum.clone())
            return g_prod * b + g_sum, g_prod * a + g_sum

    return ProdSum


def make_max_with_index(lib):
    class MaxWithIndex(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            idx = x.argmax()
            value = x.max()
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(x, idx)
            return value, idx

        @staticmethod
        def backward(ctx, g_value, g_idx):
            x, idx = ctx.saved_tensors
            grad = lib.zeros_like(x)
            grad[idx] = g_value
            return grad

    return MaxWithIndex


def make_exp(lib):
    class MyExp(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out = x.exp()
            ctx.save_for_backward(out)  # saves its own output
            return out

        @staticmethod
        def backward(ctx, g):
            (out,) = ctx.saved_tensors
            return g * out

    return MyExp


X = [0.5, -1.25, 2.0]


# -- basics ----------------------------------------------------------------------------------------------------------
def test_forward_backward_and_saved_tensors_match_torch():
    def script(lib):
        Cube = make_cube(lib)
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        y = Cube.apply(x, 2.0)
        flags = [y.requires_grad, y.is_leaf, y.grad_fn is not None]
        y.sum().backward()
        return [y, x.grad, flags]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    x = np.array(X)
    np.testing.assert_allclose(ours[0], 2 * x**3)
    np.testing.assert_allclose(ours[1], 6 * x**2)
    assert ours[2] == [True, False, True]


def test_grad_fn_is_the_ctx_and_named_after_the_class():
    Cube = make_cube(fm)
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    y = Cube.apply(x, 1.5)
    assert isinstance(y.grad_fn, Cube)
    assert y.grad_fn.k == 1.5  # attributes set on ctx in forward are there for backward
    assert "ScaledCube" in y.grad_fn.name()


def test_custom_function_composes_with_builtin_ops():
    def script(lib):
        Cube = make_cube(lib)
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        w = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = Cube.apply((x * w).sin(), 0.5).exp() * w
        y.sum().backward()
        return [x.grad, w.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_gradcheck_passes_for_a_correct_function():
    Cube = make_cube(fm)
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    assert gradcheck(lambda t: Cube.apply(t, 2.0), (x,)) is True
    assert gradcheck(lambda t: Cube.apply(t, -0.5).exp().sum(), x) is True


def test_gradcheck_detects_a_wrong_backward():
    class WrongSquare(fm.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g  # should be 2 * x * g

    x = fm.tensor([1.0, 2.0], dtype=fm.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(WrongSquare.apply, (x,))
    assert gradcheck(WrongSquare.apply, (x,), raise_exception=False) is False


def test_gradcheck_warns_for_float32_inputs():
    Cube = make_cube(fm)
    x = fm.tensor(X, dtype=fm.float32, requires_grad=True)
    with pytest.warns(UserWarning, match="float64"):
        gradcheck(lambda t: Cube.apply(t, 1.0), (x,), eps=1e-3, atol=1e-2, rtol=1e-2)


# -- needs_input_grad ----------------------------------------------------------------------------------------------
def test_needs_input_grad_in_forward_and_backward():
    def script(lib):
        class Probe(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a, b, k):
                ctx.in_forward = tuple(ctx.needs_input_grad)
                return a * b * k

            @staticmethod
            def backward(ctx, g):
                ctx.in_backward = tuple(ctx.needs_input_grad)
                ga = g * 2 if ctx.needs_input_grad[0] else None
                gb = g * 3 if ctx.needs_input_grad[1] else None
                return ga, gb, None

        a = lib.tensor([1.0, 2.0], dtype=lib.float64)
        b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        y = Probe.apply(a, b, 5)
        y.sum().backward()
        return [y.grad_fn.in_forward, y.grad_fn.in_backward, a.grad, b.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert list(ours[0]) == [False, True, False]
    assert list(ours[1]) == [False, True, False]


def test_forward_runs_with_grad_disabled_and_backward_too():
    def script(lib):
        class Probe(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.forward_mode = lib.is_grad_enabled()
                inner = x * 2
                ctx.inner_records = inner.grad_fn is not None
                return inner

            @staticmethod
            def backward(ctx, g):
                ctx.backward_mode = lib.is_grad_enabled()
                return g * 2

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = Probe.apply(x)
        y.sum().backward()
        node = y.grad_fn
        return [node.forward_mode, node.inner_records, node.backward_mode, lib.is_grad_enabled(), x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[:4] == [False, False, False, True]


def test_apply_under_no_grad_records_nothing():
    def script(lib):
        Cube = make_cube(lib)
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        with lib.no_grad():
            y = Cube.apply(x, 2.0)
        return [y.requires_grad, y.grad_fn is None, y]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[:2] == [False, True]


def test_apply_with_no_input_requiring_grad_records_nothing():
    Cube = make_cube(fm)
    y = Cube.apply(fm.tensor(X, dtype=fm.float64), 2.0)
    assert y.requires_grad is False and y.grad_fn is None


# -- several outputs ------------------------------------------------------------------------------------------
def test_multiple_outputs_both_used():
    def script(lib):
        ProdSum = make_prod_sum(lib)
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        p, s = ProdSum.apply(a, b)
        (p * 2 + s * s).sum().backward()
        return [p, s, a.grad, b.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_allclose(ours[2], [14.0, 20.0])


def test_multiple_outputs_unused_output_gets_zero_gradient_like_torch():
    def script(lib):
        ProdSum = make_prod_sum(lib)
        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
        p, s = ProdSum.apply(a, b)
        node = p.grad_fn
        p.sum().backward()
        return [list(node.received), a.grad, b.grad, s.grad_fn is node]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    np.testing.assert_array_equal(ours[0][1], [0.0, 0.0])


def test_gradcheck_with_multiple_outputs():
    ProdSum = make_prod_sum(fm)
    a = fm.tensor([1.0, 2.0, -0.5], dtype=fm.float64, requires_grad=True)
    b = fm.tensor([3.0, -4.0, 0.25], dtype=fm.float64, requires_grad=True)
    assert gradcheck(ProdSum.apply, (a, b)) is True


def test_gradcheck_with_a_non_tensor_argument():
    Cube = make_cube(fm)
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    assert gradcheck(Cube.apply, (x, 3.0)) is True


# -- gradients returned by backward -------------------------------------------------------------------------------
def test_none_gradient_for_non_tensor_and_non_grad_arguments():
    def script(lib):
        class AddScaled(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, c, k, name):
                ctx.k = k
                return x + c * k

            @staticmethod
            def backward(ctx, g):
                return g, None, None, None

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        c = lib.tensor([5.0, 6.0], dtype=lib.float64)
        AddScaled.apply(x, c, 3.0, "label").sum().backward()
        return [x.grad, c.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)


def test_gradient_for_an_input_not_requiring_grad_is_dropped():
    def script(lib):
        class Mul(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return a * b

            @staticmethod
            def backward(ctx, g):
                a, b = ctx.saved_tensors
                return g * b, g * a

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        c = lib.tensor([3.0, 4.0], dtype=lib.float64)
        Mul.apply(x, c).sum().backward()
        return [x.grad, c.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[1] is None


def test_non_none_gradient_for_a_non_tensor_argument_raises_like_torch():
    def script(lib):
        class Scale(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                ctx.k = k
                return x * k

            @staticmethod
            def backward(ctx, g):
                return g * ctx.k, lib.ones(1, dtype=lib.float64)

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        try:
            Scale.apply(x, 3.0).sum().backward()
            return "ok"
        except RuntimeError as exc:
            return "raise: " + str(exc)

    ours, theirs = both(script)
    assert theirs.startswith("raise")
    assert ours.startswith("raise"), "ForgeML silently ignored a gradient returned for a non-tensor input"


@LIBS
@pytest.mark.parametrize("returned", ["too_few", "too_many"])
def test_wrong_number_of_gradients_raises(lib, returned):
    class Bad(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, g):
            return g if returned == "too_few" else (g, g, g)

    a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    b = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="incorrect number of gradients") as info:
        Bad.apply(a, b).sum().backward()
    assert "expected 2" in str(info.value)
    assert lib.is_grad_enabled()


def test_extra_trailing_none_gradients_are_accepted_like_torch():
    def script(lib):
        class Double(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                return a * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2, None

        a = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        Double.apply(a).sum().backward()
        return a.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)


@LIBS
def test_gradient_of_incompatible_shape_raises_naming_shapes(lib):
    class BadShape(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return lib.ones(5, dtype=lib.float64)

    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid gradient at index 0") as info:
        BadShape.apply(x).sum().backward()
    assert "[5]" in str(info.value) and "[2]" in str(info.value)


def test_gradient_with_extra_broadcast_dims_is_summed_like_torch():
    """torch sums a returned gradient whose shape the input broadcasts to ([3, 2] for a [2] input)."""

    def script(lib):
        class Wide(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return lib.ones(3, 2, dtype=lib.float64) * g

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        Wide.apply(x).sum().backward()
        return x.grad

    theirs = arr(script(torch))
    np.testing.assert_allclose(theirs, [3.0, 3.0])
    ours = arr(script(fm))
    np.testing.assert_allclose(ours, theirs)


def test_gradient_dtype_is_cast_to_the_input_dtype():
    def script(lib):
        class ToFloat(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return (g * 2).float()

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        ToFloat.apply(x).sum().backward()
        return [str(x.grad.dtype).split(".")[-1], x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == "float64"


# -- mark_non_differentiable ----------------------------------------------------------------------------------------
def test_mark_non_differentiable_index_output():
    def script(lib):
        MaxWithIndex = make_max_with_index(lib)
        x = lib.tensor([1.0, 5.0, 2.0], dtype=lib.float64, requires_grad=True)
        value, idx = MaxWithIndex.apply(x)
        flags = [value.requires_grad, idx.requires_grad, idx.grad_fn is None]
        value.backward()
        return [flags, value, idx, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == [True, False, True]
    np.testing.assert_array_equal(ours[3], [0.0, 1.0, 0.0])


def test_mark_non_differentiable_float_output():
    def script(lib):
        class Mask(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = x * 2
                mask = (x > 0).to(x.dtype)
                ctx.mark_non_differentiable(mask)
                return y, mask

            @staticmethod
            def backward(ctx, gy, gmask):
                return gy * 2

        x = lib.tensor([1.0, -2.0], dtype=lib.float64, requires_grad=True)
        y, mask = Mask.apply(x)
        flags = [y.requires_grad, mask.requires_grad, mask.grad_fn is None]
        (y * mask).sum().backward()
        return [flags, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == [True, False, True]


def test_integer_outputs_do_not_require_grad():
    def script(lib):
        class ArgMax(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.argmax()

            @staticmethod
            def backward(ctx, g):
                return None

        x = lib.tensor([1.0, 3.0], requires_grad=True)
        out = ArgMax.apply(x)
        return [out.requires_grad, out.grad_fn is None]

    ours, theirs = both(script)
    assert ours == theirs == [False, True]


# -- outputs and saved tensors --------------------------------------------------------------------------------------
def test_returning_an_input_unchanged_gives_a_new_tensor_in_the_graph():
    def script(lib):
        class Ident(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x

            @staticmethod
            def backward(ctx, g):
                return g * 3

        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = Ident.apply(x)
        flags = [y is x, y.grad_fn is not None, x.grad_fn is None, x.is_leaf]
        y.sum().backward()
        return [flags, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] == [False, True, True, True]
    np.testing.assert_array_equal(ours[1], [3.0, 3.0])


def test_saved_output_modified_in_place_raises():
    def script(lib):
        MyExp = make_exp(lib)
        x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
        y = MyExp.apply(x)
        z = y * 1
        y.add_(1)
        try:
            z.sum().backward()
            return "ok"
        except RuntimeError as exc:
            return "modified by an inplace operation" in str(exc)

    ours, theirs = both(script)
    assert ours is True and theirs is True


def test_saved_input_modified_in_place_raises():
    Cube = make_cube(fm)
    x = fm.tensor(X, dtype=fm.float64, requires_grad=True)
    h = x * 1
    y = Cube.apply(h, 1.0)
    h.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_gradcheck_and_torch_agree_on_a_function_that_saves_its_output():
    def script(lib):
        MyExp = make_exp(lib)
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        (MyExp.apply(x) * x).sum().backward()
        return x.grad

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert gradcheck(make_exp(fm).apply, (fm.tensor(X, dtype=fm.float64, requires_grad=True),))


def test_saved_tensors_are_freed_after_backward_and_kept_with_retain_graph():
    def script(lib):
        Cube = make_cube(lib)
        x = lib.tensor(X, dtype=lib.float64, requires_grad=True)
        y = Cube.apply(x, 1.0)
        y.sum().backward(retain_graph=True)
        kept = len(y.grad_fn.saved_tensors)
        y.sum().backward()
        try:
            y.grad_fn.saved_tensors
            after = "ok"
        except RuntimeError as exc:
            after = "retain_graph" in str(exc)
        return [kept, after]

    ours, theirs = both(script)
    assert ours == theirs == [1, True]


@LIBS
def test_save_for_backward_rejects_non_tensors(lib):
    class SaveNumber(lib.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a, 3)
            return a * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with pytest.raises(TypeError, match="save_for_backward"):
        SaveNumber.apply(lib.tensor([1.0], requires_grad=True))


def test_save_for_backward_accepts_none():
    def script(lib):
        class MaybeSave(lib.autograd.Function):
            @staticmethod
            def forward(ctx, a):
                ctx.save_for_backward(a, None)
                return a * a

            @staticmethod
            def backward(ctx, g):
                a, nothing = ctx.saved_tensors
                ctx.nothing_is_none = nothing is None
                return 2 * a * g

        x = lib.tensor([1.0, 3.0], dtype=lib.float64, requires_grad=True)
        y = MaybeSave.apply(x)
        y.sum().backward()
        return [y.grad_fn.nothing_is_none, x.grad]

    ours, theirs = both(script)
    assert_same(ours, theirs)
    assert ours[0] is True
