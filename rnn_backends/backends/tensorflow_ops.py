"""TensorFlow's array functions: :class:`TensorflowOps` for the shared cell math and
:class:`TensorflowFastOps` for the fast step (:mod:`rnn_backends.fastpath`)."""

from __future__ import annotations

from .. import cells
from ..fastpath import FastOps
from .tensorflow_logs import tf


class TensorflowOps(cells.Ops):
    """The shared cell math's array functions in TensorFlow; ``self.dtype`` is the float dtype."""

    tanh = staticmethod(tf.tanh)
    sigmoid = staticmethod(tf.sigmoid)
    sqrt = staticmethod(tf.sqrt)
    minimum = staticmethod(tf.minimum)

    def stack(self, xs):
        return tf.stack(xs)

    def flip(self, x):
        return tf.reverse(x, axis=[0])

    def matmul(self, a, b):
        # tf.matmul broadcasts a rank-2 right operand over leading axes (BatchMatMulV2).
        return tf.matmul(a, b)

    def take_rows(self, w, ids):
        return tf.gather(w, ids)

    def one_hot(self, ids, depth):
        return tf.one_hot(ids, depth, dtype=self.dtype)

    def concat(self, xs, axis):
        return tf.concat(xs, axis=axis)

    def swap_bt(self, x):
        if x.dtype.is_integer and x.shape.rank == 2 and x.shape[1] is not None:
            # An int Transpose runs a oneDNN kernel that logs a spurious ERROR once per process
            # ("oneDNN supports DT_INT32 only on platforms with AVX-512") before falling back;
            # unstacking the T columns and stacking them moves the same ids without it.
            return tf.stack(tf.unstack(x, axis=1), axis=0)
        return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])

    def logsumexp(self, x):
        return tf.reduce_logsumexp(x, axis=-1, keepdims=True)

    def pick(self, x, ids):
        # batch_dims pairs every leading index of ids with x's, then gathers along the last axis.
        return tf.gather(x, ids, axis=-1, batch_dims=ids.shape.rank)

    def mean(self, x):
        return tf.reduce_mean(x)

    def sum(self, x):
        return tf.reduce_sum(x)


class TensorflowFastOps(TensorflowOps, FastOps):
    """The fast step, traced by ``tf.function`` with no ``GradientTape``.

    A graph op costs TensorFlow's executor a few microseconds beyond its kernel, and at H=32
    most kernels take ~10-20 us, so the graph is kept small: the time loops read their inputs
    from one ``Unpack`` each (not one ``StridedSlice`` per step). Both loops are
    Python loops unrolled into the graph once per sequence length.
    """

    exp = staticmethod(tf.exp)
    reshape = staticmethod(tf.reshape)

    def transpose(self, w):
        return tf.transpose(w)

    def sum_rows(self, x):
        return tf.reduce_sum(x, axis=0)

    def mm_tn(self, a, b):
        return tf.matmul(a, b, transpose_a=True)

    def scatter_rows(self, ids, rows, n):
        # onehot(ids)^T rows: one matmul, about twice as fast here as unsorted_segment_sum.
        return tf.matmul(tf.one_hot(ids, n, dtype=rows.dtype), rows, transpose_a=True)

    def _softmax_losses(self, hf, W_hq, b_q, Yf):
        """(every token's loss, exp(logits - max), their row sums). The softmax is written out:
        on the CPU, TensorFlow's fused sparse cross-entropy kernel took about 1.7x as long as
        these few ops. A token's loss is log(sum e) - shifted_y with shifted = logits - max (no
        overflow, and sum e >= 1 so no log of 0). BiasAdd (not +) after MatMul: grappler fuses
        the pair into one oneDNN kernel."""
        logits = tf.nn.bias_add(tf.matmul(hf, W_hq), b_q)
        shifted = logits - tf.reduce_max(logits, axis=1, keepdims=True)
        e = tf.exp(shifted)
        total = tf.reduce_sum(e, axis=1, keepdims=True)
        losses = tf.math.log(total[:, 0]) - tf.gather(shifted, Yf, axis=1, batch_dims=1)
        return losses, e, total

    def output_head(self, hf, W_hq, b_q, Yf):
        N, V = hf.shape[0], W_hq.shape[1]
        losses, e, total = self._softmax_losses(hf, W_hq, b_q, Yf)
        # (softmax - onehot) / N, the 1/N folded into both terms
        d_logits = (e * (1.0 / N)) / total - tf.one_hot(Yf, V, on_value=1.0 / N, dtype=hf.dtype)
        return (tf.reduce_mean(losses), tf.matmul(hf, d_logits, transpose_a=True),
                tf.reduce_sum(d_logits, axis=0), tf.matmul(d_logits, W_hq, transpose_b=True))

    def output_loss(self, hf, W_hq, b_q, Yf):
        # The training step's own loss, so that evaluation rounds as training does.
        return tf.reduce_mean(self._softmax_losses(hf, W_hq, b_q, Yf)[0])

    def forward_loop(self, xw, h0, W_hh):
        h, hs = h0, []
        for x in tf.unstack(xw):
            h = tf.tanh(x + tf.matmul(h, W_hh))
            hs.append(h)
        return tf.stack(hs)

    def backward_loop(self, dH, G, W_hh):
        dHs, Gs = tf.unstack(dH), tf.unstack(G)
        T = len(dHs)
        dzs: list = [None] * T
        a = dHs[T - 1]
        for t in range(T - 1, -1, -1):
            dzs[t] = a * Gs[t]
            if t:
                a = dHs[t - 1] + tf.matmul(dzs[t], W_hh, transpose_b=True)  # dz W_hh^T
        return tf.stack(dzs)
