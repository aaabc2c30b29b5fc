"""Recurrent kernels: one op runs a whole RNN, LSTM or GRU layer (one direction) over a sequence.

The input-to-hidden product of every time step does not depend on the
recurrence, so the layer computes it beforehand with one matmul over the
whole sequence (``gi = linear(x, weight_ih, bias_ih)``, an ordinary op). What
is left, the recurrence, is :class:`RecurrentScan`: its forward loops over the
time steps doing one ``h @ weight_hh.T`` and the gate math per step; its
backward runs the steps in reverse (backpropagation through time) and forms
the gradients of ``weight_hh`` and ``bias_hh`` with one product over all steps
at the end. The graph holds one node per layer and direction whatever the
sequence length.

Variable-length (packed) sequences arrive padded, time-major and sorted by
decreasing length, with ``batch_sizes[t]`` the number of sequences still
running at step ``t``: step ``t`` updates only the first ``batch_sizes[t]``
rows, so each row's final state is its last real step's (forward direction),
and in the reverse direction each row starts from its initial state at its own
last step. Outputs at padded positions are zero.

Gate layouts are PyTorch's: LSTM ``(i, f, g, o)``, GRU ``(r, z, n)`` with
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
"""

from __future__ import annotations

from ..autograd.function import ArrayFunction

__all__ = ["GATES", "RecurrentScan", "recurrent_scan"]

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _sigmoid(xp, x):
    """``1 / (1 + exp(-x))`` through tanh, which cannot overflow."""
    return 0.5 * xp.tanh(0.5 * x) + 0.5


def _steps(n_steps, reverse):
    return range(n_steps - 1, -1, -1) if reverse else range(n_steps)


class RecurrentScan(ArrayFunction):
    """The recurrence of one layer and direction over ``gi`` ``[T, B, gates*H]`` (the projected input).

    Inputs ``(gi, h0, c0, w_hh, b_hh)``; ``c0`` is None except for the LSTM,
    ``b_hh`` is None without biases. Outputs ``(output [T, B, H], h_n [B, H])``
    and, for the LSTM, ``c_n``.
    """

    @staticmethod
    def forward(ctx, gi, h0, c0, w_hh, b_hh, *, mode, batch_sizes, reverse):
        xp = ctx.xp
        n_steps, batch = gi.shape[0], gi.shape[1]
        if batch_sizes is None:
            batch_sizes = (batch,) * n_steps
        ctx.meta = (mode, batch_sizes, reverse)
        hidden = w_hh.shape[1]
        out = xp.zeros((n_steps, batch, hidden), dtype=gi.dtype)
        h_prev = xp.zeros_like(out)  # each step's incoming state (the factor of weight_hh's gradient)
        h = h0.copy()
        w_t = w_hh.T
        if mode == "GRU":
            saved = RecurrentScan._gru_forward(xp, gi, h, w_t, b_hh, out, h_prev, batch_sizes, reverse)
            ctx.save_for_backward(w_hh, h_prev, *saved)
            return out, h
        if b_hh is not None:
            gi = gi + b_hh  # outside the nonlinearity, b_hh is one more bias on the projected input
        if mode == "LSTM":
            c = c0.copy()
            saved = RecurrentScan._lstm_forward(xp, gi, h, c, w_t, out, h_prev, batch_sizes, reverse)
            ctx.save_for_backward(w_hh, h_prev, *saved)
            return out, h, c
        relu = mode == "RNN_RELU"
        for t in _steps(n_steps, reverse):
            bs = batch_sizes[t]
            h_prev[t, :bs] = h[:bs]
            a = gi[t, :bs] + h[:bs] @ w_t
            h[:bs] = xp.maximum(a, 0) if relu else xp.tanh(a)
            out[t, :bs] = h[:bs]
        ctx.save_for_backward(w_hh, h_prev, out)
        return out, h

    @staticmethod
    def _lstm_forward(xp, gi, h, c, w_t, out, h_prev, batch_sizes, reverse):
        n_steps, hidden = out.shape[0], out.shape[2]
        acts = xp.zeros(gi.shape, dtype=gi.dtype)  # sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)
        c_prev = xp.zeros_like(out)
        tanh_c = xp.zeros_like(out)
        g_slice = slice(2 * hidden, 3 * hidden)
        for t in _steps(n_steps, reverse):
            bs = batch_sizes[t]
            h_prev[t, :bs] = h[:bs]
            c_prev[t, :bs] = c[:bs]
            gates = gi[t, :bs] + h[:bs] @ w_t
            a = _sigmoid(xp, gates)
            a[:, g_slice] = xp.tanh(gates[:, g_slice])
            acts[t, :bs] = a
            c[:bs] = a[:, hidden : 2 * hidden] * c[:bs] + a[:, :hidden] * a[:, g_slice]
            tc = xp.tanh(c[:bs])
            tanh_c[t, :bs] = tc
            h[:bs] = a[:, 3 * hidden :] * tc
            out[t, :bs] = h[:bs]
        return acts, c_prev, tanh_c

    @staticmethod
    def _gru_forward(xp, gi, h, w_t, b_hh, out, h_prev, batch_sizes, reverse):
        n_steps, batch, hidden = out.shape
        rz = xp.zeros((n_steps, batch, 2 * hidden), dtype=gi.dtype)
        new = xp.zeros_like(out)  # the candidate state n
        gh_n = xp.zeros_like(out)  # W_hn h + b_hn, which r multiplies
        for t in _steps(n_steps, reverse):
            bs = batch_sizes[t]
            hp = h[:bs]
            h_prev[t, :bs] = hp
            gh = hp @ w_t
            if b_hh is not None:
                gh += b_hh
            r_z = _sigmoid(xp, gi[t, :bs, : 2 * hidden] + gh[:, : 2 * hidden])
            n = xp.tanh(gi[t, :bs, 2 * hidden :] + r_z[:, :hidden] * gh[:, 2 * hidden :])
            rz[t, :bs] = r_z
            new[t, :bs] = n
            gh_n[t, :bs] = gh[:, 2 * hidden :]
            h[:bs] = n + r_z[:, hidden:] * (hp - n)
            out[t, :bs] = h[:bs]
        return rz, new, gh_n

    @staticmethod
    def backward(ctx, g_out, g_h, g_c=None):
        mode, batch_sizes, reverse = ctx.meta
        w_hh, h_prev, *saved = ctx.saved_tensors
        xp = ctx.xp
        n_steps, batch, hidden = h_prev.shape
        dh = xp.zeros((batch, hidden), dtype=h_prev.dtype) if g_h is None else g_h.copy()
        d_gi = xp.zeros((n_steps, batch, w_hh.shape[0]), dtype=h_prev.dtype)
        d_gh = d_gi  # the gradient of h @ w_hh.T (+ b_hh): the same as gi's except for the GRU
        steps = _steps(n_steps, not reverse)
        dc = None
        if mode == "LSTM":
            dc = xp.zeros_like(dh) if g_c is None else g_c.copy()
            acts, c_prev, tanh_c = saved
            for t in steps:
                bs = batch_sizes[t]
                dh_t = dh[:bs] if g_out is None else dh[:bs] + g_out[t, :bs]
                a, tc = acts[t, :bs], tanh_c[t, :bs]
                i, f, g, o = (a[:, k * hidden : (k + 1) * hidden] for k in range(4))
                dc_t = dc[:bs] + dh_t * o * (1 - tc * tc)
                da = xp.concatenate((dc_t * g, dc_t * c_prev[t, :bs], dc_t * i, dh_t * tc), axis=1)
                deriv = a * (1 - a)
                deriv[:, 2 * hidden : 3 * hidden] = 1 - g * g
                da *= deriv
                d_gi[t, :bs] = da
                dh[:bs] = da @ w_hh
                dc[:bs] = dc_t * f
        elif mode == "GRU":
            rz, new, gh_n = saved
            d_gh = xp.zeros_like(d_gi)
            for t in steps:
                bs = batch_sizes[t]
                dh_t = dh[:bs] if g_out is None else dh[:bs] + g_out[t, :bs]
                r_z, n = rz[t, :bs], new[t, :bs]
                z = r_z[:, hidden:]
                d_an = dh_t * (1 - z) * (1 - n * n)
                d_rz = xp.concatenate((d_an * gh_n[t, :bs], dh_t * (h_prev[t, :bs] - n)), axis=1) * r_z * (1 - r_z)
                d_gi[t, :bs, : 2 * hidden] = d_rz
                d_gi[t, :bs, 2 * hidden :] = d_an
                d_gh[t, :bs, : 2 * hidden] = d_rz
                d_gh[t, :bs, 2 * hidden :] = d_an * r_z[:, :hidden]
                dh[:bs] = dh_t * z + d_gh[t, :bs] @ w_hh
        else:
            (out,) = saved
            relu = mode == "RNN_RELU"
            for t in steps:
                bs = batch_sizes[t]
                dh_t = dh[:bs] if g_out is None else dh[:bs] + g_out[t, :bs]
                y = out[t, :bs]
                da = dh_t * (y > 0) if relu else dh_t * (1 - y * y)
                d_gi[t, :bs] = da
                dh[:bs] = da @ w_hh
        n = ctx.needs_input_grad
        flat = d_gh.reshape(-1, d_gh.shape[-1])
        d_w = flat.T @ h_prev.reshape(-1, hidden) if n[3] else None
        d_b = flat.sum(axis=0) if n[4] else None
        return d_gi, dh, dc, d_w, d_b


def recurrent_scan(gi, h0, c0, w_hh, b_hh, mode: str, batch_sizes=None, reverse: bool = False):
    """Run the recurrence of ``mode`` (``RNN_TANH``, ``RNN_RELU``, ``LSTM``, ``GRU``) over ``gi``.

    ``gi`` is ``[T, B, gates*H]``, the input already multiplied by
    ``weight_ih`` with ``bias_ih`` added; ``h0`` and ``c0`` are ``[B, H]``;
    ``batch_sizes`` (a tuple of ``T`` non-increasing ints, or None) marks the
    rows each step updates. Returns ``(output, h_n)``, or ``(output, h_n, c_n)``
    for the LSTM.
    """
    if mode not in GATES:
        raise ValueError(f"recurrent_scan: unknown mode {mode!r}; expected one of {sorted(GATES)}")
    return RecurrentScan.apply(gi, h0, c0, w_hh, b_hh, mode=mode, batch_sizes=batch_sizes, reverse=reverse)
