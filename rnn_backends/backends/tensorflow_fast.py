"""TensorFlow's fused training step: :mod:`rnn_backends.fastpath` traced by ``tf.function``.

Both time loops are Python loops unrolled into the graph once per sequence length, and the
hand-written backward needs no ``GradientTape``. XLA (``jit_compile``) then fuses each step's
elementwise ops into its matmul where the backend enables it.
"""

from __future__ import annotations

import tensorflow as tf

from ..fastpath import FusedOps
from .tensorflow_backend import TensorflowOps


class TensorflowFusedOps(TensorflowOps, FusedOps):
    exp = staticmethod(tf.exp)
    stack = staticmethod(tf.stack)
    reshape = staticmethod(tf.reshape)

    def transpose(self, w):
        return tf.transpose(w)

    def sum_rows(self, x):
        return tf.reduce_sum(x, axis=0)

    def mm_tn(self, a, b):
        return tf.matmul(a, b, transpose_a=True)

    def scatter_rows(self, ids, rows, n):
        return tf.math.unsorted_segment_sum(rows, ids, n)
