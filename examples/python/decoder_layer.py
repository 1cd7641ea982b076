#!/usr/bin/env python3
"""One decoder layer of a small LLaMA-shaped model through tandemd, from Python.

The Python counterpart of examples/llm_layer.c: random weights (fixed seed),
batch 1, a prompt already in the KV cache, then `steps` decode steps, each
one task graph over shared buffers (docs/kernels.md):

    xn = rmsnorm(x)              q, k, v = xn Wq, xn Wk, xn Wv     (sgemm)
    rope(q), rope(k) at pos      K[pos] = k, V[pos] = v            (copy)
    a = attn_decode(q, K, V)     x += a Wo                         (sgemm, axpy)
    xn2 = rmsnorm(x)             ids, w = topk_router(xn2 Wr)
    y = 0; y += expert_e(xn2) for every expert e;  x += y

The buffers are numpy arrays over the daemon's shared memory: weights are
written into them in place, and the hidden state is read from them after
each step without a copy. reference_step() computes the same step with
numpy in double precision; run() compares them after each step.

    TANDEM_SOCKET=... python3 examples/python/decoder_layer.py --steps 4
"""

import argparse
import os
import sys

import numpy as np

try:
    import tandem
except ImportError:  # run from the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
    import tandem

RMS_EPS = 1e-5
ROPE_THETA = 10000.0
ROUTER_TIE = 1e-4  # router probabilities closer than this may swap in float rounding


class Shape:
    def __init__(self, dm=256, nh=8, nkv=2, hd=32, ne=8, topk=2, dff=512, prompt=16, kv_cap=64,
                 dense=False):
        self.dm, self.nh, self.nkv, self.hd = dm, nh, nkv, hd
        self.ne, self.topk = (1, 1) if dense else (ne, topk)
        self.dff, self.prompt, self.kv_cap, self.dense = dff, prompt, kv_cap, dense
        self.qd, self.kvd = nh * hd, nkv * hd


class Layer:
    """The layer's buffers in the daemon; .w holds the weights' arrays."""

    def __init__(self, c, s, rng):
        f32 = np.float32

        def weights(shape, fan_in, bias=0.0, scale=None):
            b = c.alloc(shape, f32, tandem.WEIGHTS)
            sc = 1.0 / np.sqrt(fan_in) if scale is None else scale
            b.array[...] = bias + sc * rng.uniform(-1, 1, shape)  # in place, no copy
            return b

        self.norm1 = weights(s.dm, 1, 1.0, 0.1)
        self.wq = weights((s.dm, s.qd), s.dm)
        self.wk = weights((s.dm, s.kvd), s.dm)
        self.wv = weights((s.dm, s.kvd), s.dm)
        self.wo = weights((s.qd, s.dm), s.qd)
        self.norm2 = weights(s.dm, 1, 1.0, 0.1)
        self.wr = None if s.dense else weights((s.dm, s.ne), s.dm)
        self.gate = [weights((s.dm, s.dff), s.dm) for _ in range(s.ne)]
        self.up = [weights((s.dm, s.dff), s.dm) for _ in range(s.ne)]
        self.down = [weights((s.dff, s.dm), s.dff) for _ in range(s.ne)]

        self.kc = c.alloc((s.kv_cap, s.kvd), f32, tandem.KV)
        self.vc = c.alloc((s.kv_cap, s.kvd), f32, tandem.KV)
        self.kc.array[:s.prompt] = rng.uniform(-1, 1, (s.prompt, s.kvd))
        self.vc.array[:s.prompt] = rng.uniform(-1, 1, (s.prompt, s.kvd))
        self.x = c.alloc(s.dm)
        self.x.array[:] = rng.uniform(-1, 1, s.dm)

        def tmp(n, dtype=f32, flags=tandem.SCRATCH):
            return c.alloc(n, dtype, flags)

        self.xn, self.q, self.k, self.v = tmp(s.dm), tmp(s.qd), tmp(s.kvd), tmp(s.kvd)
        self.att, self.o, self.xn2, self.y = tmp(s.qd), tmp(s.dm), tmp(s.dm), tmp(s.dm)
        self.logits = tmp(s.ne)
        # ids and weights are read back after each step: not scratch
        self.ids = tmp(s.topk, np.int32, 0)
        self.wts = tmp(s.topk, f32, 0)
        if s.dense:  # every token to expert 0 with weight 1
            self.ids.array[0] = 0
            self.wts.array[0] = 1.0


def build_step(c, s, L, pos):
    R, W, RW = tandem.read, tandem.write, tandem.readwrite
    g = c.graph(task_info=True)

    def matmul(a, b, out, m, n, k):  # out (m x n) = a (m x k) b (k x n)
        g.add("sgemm", [R(a), R(b), RW(out)], [m, n, k, 1.0, 0.0])

    g.add("rmsnorm", [R(L.x), R(L.norm1), W(L.xn)], [1, s.dm, RMS_EPS])
    matmul(L.xn, L.wq, L.q, 1, s.qd, s.dm)
    matmul(L.xn, L.wk, L.k, 1, s.kvd, s.dm)
    matmul(L.xn, L.wv, L.v, 1, s.kvd, s.dm)
    g.add("rope", [RW(L.q)], [1, s.nh, s.hd, pos, ROPE_THETA])
    g.add("rope", [RW(L.k)], [1, s.nkv, s.hd, pos, ROPE_THETA])
    # the cache rows of this position: slices of the KV buffers' arrays
    g.add("copy", [R(L.k), W(L.kc.array[pos])])
    g.add("copy", [R(L.v), W(L.vc.array[pos])])
    g.add("attn_decode", [R(L.q), R(L.kc), R(L.vc), W(L.att)],
          [1, s.nh, s.nkv, s.hd, pos + 1, s.kv_cap])
    matmul(L.att, L.wo, L.o, 1, s.dm, s.qd)
    g.add("axpy", [R(L.o), RW(L.x)], [1.0])
    g.add("rmsnorm", [R(L.x), R(L.norm2), W(L.xn2)], [1, s.dm, RMS_EPS])
    if not s.dense:
        matmul(L.xn2, L.wr, L.logits, 1, s.ne, s.dm)
        g.add("topk_router", [R(L.logits), W(L.ids), W(L.wts)], [1, s.ne, s.topk])
    g.add("fill", [W(L.y)], [0.0])
    for e in range(s.ne):  # all write y: the daemon runs them one after another
        g.add("moe_expert", [R(L.xn2), R(L.gate[e]), R(L.up[e]), R(L.down[e]), R(L.ids),
                             R(L.wts), RW(L.y)], [1, s.dm, s.dff, s.topk, e])
    g.add("axpy", [R(L.y), RW(L.x)], [1.0])
    return g


# ---- the reference: numpy, double precision ---------------------------------------


class Reference:
    def __init__(self, s, L):
        self.s, self.L = s, L
        self.x = L.x.array.astype(np.float64)
        self.kc = L.kc.array.astype(np.float64)
        self.vc = L.vc.array.astype(np.float64)

    @staticmethod
    def rmsnorm(x, w):
        return x / np.sqrt(np.mean(x * x) + np.float32(RMS_EPS)) * w.array

    def rope(self, x, nheads, pos):
        hd = self.s.hd
        i = np.arange(hd // 2, dtype=np.float32)
        # the angle in single precision, as docs/kernels.md says
        f = (np.float32(pos) * np.power(np.float32(ROPE_THETA), np.float32(-2.0) * i /
                                          np.float32(hd))).astype(np.float64)
        v = x.reshape(nheads, hd)
        a, b = v[:, :hd // 2].copy(), v[:, hd // 2:].copy()
        v[:, :hd // 2] = a * np.cos(f) - b * np.sin(f)
        v[:, hd // 2:] = a * np.sin(f) + b * np.cos(f)

    @staticmethod
    def softmax(z):
        p = np.exp(z - z.max())
        return p / p.sum()

    def step(self, pos, got_ids):
        """One decode step; got_ids: the daemon's routing (to follow it on a
        near tie). Returns False when the routing differs for real."""
        s, L = self.s, self.L
        xn = self.rmsnorm(self.x, L.norm1)
        q, k, v = xn @ L.wq.array, xn @ L.wk.array, xn @ L.wv.array
        self.rope(q, s.nh, pos)
        self.rope(k, s.nkv, pos)
        self.kc[pos], self.vc[pos] = k, v
        group = s.nh // s.nkv
        att = np.empty(s.qd)
        for h in range(s.nh):
            g = (h // group) * s.hd
            K = self.kc[:pos + 1, g:g + s.hd]
            V = self.vc[:pos + 1, g:g + s.hd]
            p = self.softmax(K @ q[h * s.hd:(h + 1) * s.hd] / np.sqrt(s.hd))
            att[h * s.hd:(h + 1) * s.hd] = p @ V
        self.x = self.x + att @ L.wo.array
        xn2 = self.rmsnorm(self.x, L.norm2)
        same = True
        if s.dense:
            ids, w = [0], [1.0]
        else:
            probs = self.softmax(xn2 @ L.wr.array)
            ids = list(np.argsort(-probs, kind="stable")[:s.topk])
            if list(got_ids) != ids:
                tie = all(0 <= gi < s.ne and abs(probs[gi] - probs[wi]) <= ROUTER_TIE
                          for gi, wi in zip(got_ids, ids))
                same = tie
                if tie:
                    ids = list(got_ids)
            w = probs[ids] / probs[ids].sum()
        y = np.zeros(s.dm)
        for e, r in zip(ids, w):
            gt = xn2 @ L.gate[e].array
            u = xn2 @ L.up[e].array
            y += r * ((gt / (1 + np.exp(-gt)) * u) @ L.down[e].array)
        self.x = self.x + y
        return same


def max_rel_error(got, want):
    """|got - want| / |want|, elements below 1% of the largest measured
    against that 1% (rounding noise on a near-zero element means nothing)."""
    floor = 1e-2 * np.abs(want).max()
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), floor)))


def run(client, steps=4, dense=False, seed=1, shape=None, log=None):
    """Runs `steps` decode steps; returns (worst relative error of x, the
    task infos of the last step)."""
    s = shape or Shape(dense=dense)
    if s.prompt + steps > s.kv_cap:
        raise ValueError("prompt + steps must fit in kv_cap")
    L = Layer(client, s, np.random.default_rng(seed))
    ref = Reference(s, L)
    worst, infos = 0.0, []
    for step in range(steps):
        pos = s.prompt + step
        g = build_step(client, s, L, pos)
        g.run(timeout=60)
        infos = g.task_infos()
        if not ref.step(pos, L.ids.array.copy()):
            raise AssertionError("step %d: the daemon's router chose experts %s, numpy's "
                                 "others" % (step, list(L.ids.array)))
        err = max_rel_error(L.x.array, ref.x)  # read in place: no copy back
        worst = max(worst, err)
        if log:
            devices = sorted({t.device for t in infos})
            log("step %d: %d tasks on devices %s, max rel error %.2e"
                % (step, len(infos), devices, err))
    return worst, infos


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--dense", action="store_true", help="one SwiGLU MLP instead of experts")
    ap.add_argument("--socket", help="daemon socket (default: $TANDEM_SOCKET, then the "
                    "default path)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    with tandem.Client(a.socket) as c:
        worst, _ = run(c, a.steps, a.dense, a.seed, log=print)
    ok = worst <= 1e-3
    print("decoder_layer: %d steps, max rel error %.2e: %s"
          % (a.steps, worst, "ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
