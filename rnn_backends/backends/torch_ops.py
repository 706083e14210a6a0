"""PyTorch's array functions: :class:`TorchOps` for the shared cell math and
:class:`TorchFastOps` for the fast step (:mod:`rnn_backends.fastpath`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import cells
from ..fastpath import FastOps


class TorchOps(cells.Ops):
    """The shared cell math's array functions in PyTorch; ``self.dtype`` is the float dtype."""

    matmul = staticmethod(torch.matmul)
    tanh = staticmethod(torch.tanh)
    sigmoid = staticmethod(torch.sigmoid)
    sqrt = staticmethod(torch.sqrt)
    stack = staticmethod(torch.stack)

    def flip(self, x):
        return torch.flip(x, dims=(0,))

    def take_rows(self, w, ids):
        return w[ids]

    def one_hot(self, ids, depth):
        return F.one_hot(ids, depth).to(self.dtype)

    def concat(self, xs, axis):
        return torch.cat(xs, dim=axis)

    def swap_bt(self, x):
        return x.transpose(0, 1)

    def logsumexp(self, x):
        return torch.logsumexp(x, dim=-1, keepdim=True)

    def pick(self, x, ids):
        return torch.gather(x, -1, ids.unsqueeze(-1)).squeeze(-1)

    def mean(self, x):
        return x.mean()

    def sum(self, x):
        return x.sum()

    def minimum(self, x, y):
        return torch.clamp(x, max=y)

    def cross_entropy(self, logits, Y):
        # torch's fused loss: one log-softmax kernel forward and one backward, where the generic
        # formula runs max, exp, log, sums and a gather each way (it made the textbook variant
        # cost ~1.3x the book's code, which calls F.cross_entropy). The logits arrive as the
        # batch-major view of time-major ones; the mean over tokens does not depend on their
        # order, so the loss reads them in time-major order, contiguous, without a copy.
        V = logits.shape[-1]
        tm = logits.transpose(0, 1)
        if tm.is_contiguous():
            return F.cross_entropy(tm.reshape(-1, V), Y.transpose(0, 1).reshape(-1))
        return F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))


class TorchFastOps(TorchOps, FastOps):
    """The fast step run eagerly with no autograd tape.

    At H=32 a step costs what its ops cost to launch, and autograd roughly triples the op count
    (the tape, then one adjoint per op). Here the backward pass is written by hand, so a time step
    is two ops forward (in-place ``addmm_`` and ``tanh_``) and two backward (in-place ``mul_`` and
    ``addmm_``), with no allocation or copy in either loop.
    """

    addmm = staticmethod(torch.addmm)
    exp = staticmethod(torch.exp)

    def transpose(self, w):
        return w.t()

    def sum_rows(self, x):
        return x.sum(0)

    def mm_tn(self, a, b):
        return a.t() @ b

    def scatter_rows(self, ids, rows, n):
        return torch.zeros((n, rows.shape[1]), dtype=rows.dtype, device=rows.device).index_add_(
            0, ids, rows
        )

    def take_rows(self, w, ids):
        return w.index_select(0, ids)  # several times faster than w[ids] on the CPU

    def tanh_grad(self, hs):
        # 1 - h^2 in one pass over the states (mul, neg_, add_ would be three)
        one = torch.ones((), dtype=hs.dtype, device=hs.device)
        return torch.addcmul(one, hs, hs, value=-1.0)

    def output_head(self, hf, W_hq, b_q, Yf):
        # Vocabulary-major logits (V, N): with V=28 the softmax's reductions over the vocabulary
        # then run down columns of long contiguous rows (vectorised), not along rows of 28.
        N = hf.shape[0]
        z = torch.addmm(b_q[:, None], W_hq.t(), hf.t())  # (V, N)
        z.sub_(z.amax(0))  # shifted by each token's max: exp cannot overflow
        target = z.gather(0, Yf[None])[0]  # the shifted logit of every token's target
        p = z.exp_()
        total = p.sum(0)
        loss = (total.log() - target).mean()
        p.mul_(total.reciprocal_().mul_(1.0 / N))  # softmax / N
        p.scatter_add_(0, Yf[None], torch.full((1, N), -1.0 / N, dtype=p.dtype, device=p.device))
        # p is now d loss / d logits, (V, N)
        return loss, (p @ hf).t(), p.sum(1), torch.mm(p.t(), W_hq.t())

    def output_loss(self, hf, W_hq, b_q, Yf):
        return F.cross_entropy(torch.addmm(b_q, hf, W_hq), Yf)

    # The loops overwrite their inputs, which the fast step makes for them and never reads again:
    # xw becomes the states, G the pre-activation gradients and dH the running adjoint, so the
    # per-step ops allocate nothing and copy nothing.

    def forward_loop(self, xw, h0, W_hh):
        h = h0
        for t in range(xw.shape[0]):
            h = xw[t].addmm_(h, W_hh).tanh_()
        return xw

    def backward_loop(self, dH, G, W_hh):
        W_hh_T = W_hh.t()
        a = dH[-1]
        for t in range(dH.shape[0] - 1, -1, -1):
            dz = G[t].mul_(a)
            if t:
                a = dH[t - 1].addmm_(dz, W_hh_T)
        return G
