"""Growable KV buffers (Client.reserve, Buffer.grow) and KV admission
(Client.kv_admit) through the binding."""

import shutil

import numpy as np
import pytest

from conftest import Daemon

import tandem

MiB = 1 << 20
GiB = 1 << 30


def test_growable_buffer_views_cover_what_is_grown(client):
    d = 256
    row = d * 4  # float32
    kv = client.reserve(GiB)
    assert kv.growable and kv.capacity == GiB and kv.flags == tandem.KV
    assert kv.nbytes == 0 and kv.array.shape == (0,)
    expect = np.random.default_rng(7).standard_normal((4000, d)).astype(np.float32)
    views = []
    for step in range(4):
        lo, hi = step * 1000, (step + 1) * 1000
        a = kv.grow(hi * row)
        assert a is kv.array and a.shape == (hi * d,) and kv.nbytes == hi * row
        a.reshape(-1, d)[lo:hi] = expect[lo:hi]  # the new rows, through the view
        views.append(a)
    assert [v.shape[0] for v in views] == [1000 * d, 2000 * d, 3000 * d, 4000 * d]
    with pytest.raises(ValueError):  # no view past the use: those pages are not backed
        kv.view(np.float32, (4001, d))
    rows = kv.view(np.float32, (4000, d))

    out = client.alloc((4000, d))
    g = client.graph()
    for step in range(4):  # each task reads the rows one step added
        s = slice(step * 1000, (step + 1) * 1000)
        g.add("axpy", [tandem.read(rows[s]), tandem.readwrite(out.array[s])], [2.0])
    g.run(timeout=30)
    np.testing.assert_allclose(out.array, 2.0 * expect, rtol=1e-6)

    with pytest.raises(tandem.Error) as e:
        kv.grow(GiB + 1)
    assert e.value.code == tandem.Status.ERANGE and e.value.status == -tandem.Status.ERANGE
    with pytest.raises(tandem.Error) as e:
        kv.grow(row)  # the use never goes down
    assert e.value.code == tandem.Status.EINVAL
    assert kv.nbytes == 4000 * row and kv.array.shape == (4000 * d,)  # as it was

    # a task may not name bytes past the use either
    past = client.alloc(4001 * d)
    g = client.graph()
    with pytest.raises(tandem.Error) as e:
        g.add("axpy", [tandem.read(kv, 0, 4001 * row), tandem.readwrite(past)], [1.0])
        g.run(timeout=30)
    assert e.value.code == tandem.Status.ERANGE

    with pytest.raises(tandem.Error) as e:
        client.alloc(16).grow(128)
    assert e.value.code == tandem.Status.EINVAL
    with pytest.raises(tandem.Error) as e:
        client.reserve(MiB, flags=tandem.WEIGHTS)  # growable means KV
    assert e.value.code == tandem.Status.EINVAL


def test_kv_admit():
    d = Daemon("[profiler]\ncalibrate = false\n[limits]\nbuffer_quota_bytes = \"64MiB\"\n")
    try:
        with tandem.Client(d.sock) as c:
            ask = c.kv_admit()
            assert isinstance(ask, tandem.KVAdmission)
            assert ask.host_free_bytes == 64 * MiB
            kv = c.reserve(GiB)
            kv.grow(8 * MiB)
            a = c.kv_admit(kv, bytes_per_token=MiB, context_tokens=8, max_new_tokens=24)
            assert a.tier in (tandem.Tier.DEVICE, tandem.Tier.HOST)
            assert a.predicted_new_tokens == 24 and a.history == 0
            assert a.peak_bytes >= (8 + 24) * MiB
            kv2 = c.reserve(GiB)
            # the two at the first one's end: 32 + 64 MiB, over the quota on any tier
            with pytest.raises(tandem.Error) as e:
                c.kv_admit(kv2, bytes_per_token=MiB, context_tokens=40, max_new_tokens=32)
            assert e.value.code == tandem.Status.EQUOTA
            a = c.kv_admit(kv2, bytes_per_token=MiB, context_tokens=40, max_new_tokens=4)
            assert a.host_free_bytes == 64 * MiB - 56 * MiB
            a = c.kv_admit(kv2, bytes_per_token=MiB, context_tokens=40, max_new_tokens=4,
                           tier=tandem.Tier.HOST)
            assert a.tier == tandem.Tier.HOST  # asked for the host: never the device
        assert d.alive(), d.log_text()
    finally:
        assert d.stop() == 0, d.log_text()
    shutil.rmtree(d.dir, ignore_errors=True)  # kept for a look when the test failed


def test_library_version():
    v = tandem.library_version()
    assert v == tandem.__version__
    assert len(v.split(".")) == 3 and all(p.isdigit() for p in v.split("."))
