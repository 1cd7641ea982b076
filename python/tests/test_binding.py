"""The Python binding against a private tandemd: buffers as arrays without
copies, kernels by name, graphs and their dependencies, hints, waits with a
timeout, task info, errors as exceptions."""

import gc
import time

import numpy as np
import pytest

import tandem
from tandem._lib import lib


def session(daemon, sid):
    """The daemon's entry for client session sid, or None when it is gone."""
    for c in daemon.ctl("clients")["clients"]:
        if c["session"] == sid:
            return c
    return None


def wait_gone(daemon, sid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while session(daemon, sid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---- errors ---------------------------------------------------------------------


def test_status_table_is_the_c_librarys():
    assert tandem.Status.OK == 0
    assert tandem.Status.ETIMEDOUT == 8
    assert len(tandem.Status) > 20
    for s in tandem.Status:
        assert lib.tdm_error_symbol(-s).decode() == s.name
        assert tandem.strerror(-s) == lib.tdm_strerror(s).decode()
    assert tandem.strerror(tandem.Status.EKERNEL) == "unknown kernel"
    assert tandem.RejectField.RANGE == 10
    assert tandem.reject_field_name(tandem.RejectField.COST) == "predicted task cost"


def test_connect_error_is_an_exception(tmp_path):
    with pytest.raises(tandem.Error) as e:
        tandem.Client(str(tmp_path / "nobody.sock"))
    assert e.value.code == tandem.Status.ECONNECT
    assert e.value.status == -tandem.Status.ECONNECT
    assert "cannot connect" in str(e.value)


def test_unknown_kernel(client):
    with pytest.raises(tandem.Error) as e:
        client.kernel("no_such_kernel")
    assert e.value.code == tandem.Status.EKERNEL
    assert client.kernel("sgemm").name == "sgemm"
    assert client.kernel("sgemm") == client.kernel("sgemm")


def test_client_side_checks_raise_at_add(client):
    x = client.alloc(16)
    g = client.graph()
    with pytest.raises(tandem.Error) as e:  # axpy takes (R, RW), one scalar
        g.add("axpy", [tandem.read(x)], [1.0])
    assert e.value.code == tandem.Status.EARITY
    with pytest.raises(tandem.Error) as e:
        g.add("fill", [tandem.write(x, offset=0, length=128)], [1.0])
    assert e.value.code == tandem.Status.ERANGE
    with pytest.raises(ValueError):
        g.add("fill", [tandem.write(np.zeros(4, np.float32))], [1.0])  # not a buffer's
    with pytest.raises(tandem.Error) as e:
        g.edge(0, 0)
    assert e.value.code == tandem.Status.EEDGE


def test_daemon_rejection_carries_task_and_field(client):
    a, b, c = client.alloc((4, 4)), client.alloc((4, 4)), client.alloc((4, 4))
    g = client.graph()
    g.add("fill", [tandem.write(c)], [0.0])
    # 8x8 matrices in 4x4 buffers: only the daemon's kernel check sees it.
    g.add("sgemm", [tandem.read(a), tandem.read(b), tandem.readwrite(c)], [8, 8, 8, 1.0, 0.0])
    with pytest.raises(tandem.Error) as e:
        g.run(timeout=10)
    assert e.value.code == tandem.Status.ERANGE
    assert e.value.task == 1
    assert e.value.field == tandem.RejectField.KERNEL_ARGS
    assert e.value.field_name == "kernel-specific argument check"
    assert "sgemm" in str(e.value)


def test_unknown_policy_hint_is_rejected(client):
    g = client.graph()
    g.add("noop")
    g.policy = 99
    with pytest.raises(tandem.Error) as e:
        g.run(timeout=10)
    assert e.value.field == tandem.RejectField.POLICY


def test_cost_over_budget_is_rejected(client):
    g = client.graph()
    g.add("spin", [], [10_000_000])  # 10 s against max_task_ms 1000
    with pytest.raises(tandem.Error) as e:
        g.run(timeout=10)
    assert e.value.code == tandem.Status.EQUOTA
    assert e.value.field == tandem.RejectField.COST


# ---- buffers ------------------------------------------------------------------


def test_buffer_is_the_shared_memory_itself(client):
    x = client.alloc((8, 32), np.float32)
    assert x.array.shape == (8, 32) and x.array.dtype == np.float32
    assert not x.array.flags.owndata
    assert (x.array == 0).all()  # zeroed
    x.array[:] = np.arange(256, dtype=np.float32).reshape(8, 32)
    ints = x.view(np.uint32)
    assert ints.ctypes.data == x.array.ctypes.data  # one memory, two views
    assert ints[1] == np.float32(1).view(np.uint32)
    y = client.alloc(256)
    g = client.graph()
    g.add("fill", [tandem.write(y)], [0.5])
    g.add("axpy", [tandem.read(x), tandem.readwrite(y)], [2.0])
    g.run(timeout=10)
    # what the daemon wrote is in y.array, no copy back needed
    np.testing.assert_array_equal(y.array, 0.5 + 2.0 * np.arange(256, dtype=np.float32))


def test_accumulators_add_in_task_order(client):
    x = client.from_array(np.arange(64, dtype=np.float32))
    y = client.alloc(64)
    g = client.graph()
    g.add("fill", [tandem.write(y)], [1.0])
    for a in (1.0, 2.0, 3.0):
        g.add("axpy", [tandem.read(x), tandem.accumulate(y)], [a])
    g.run(timeout=10)
    want = np.float32(1) + np.arange(64, dtype=np.float32)
    want = want + 2 * np.arange(64, dtype=np.float32)
    want = want + 3 * np.arange(64, dtype=np.float32)
    np.testing.assert_array_equal(y.array, want)


def test_guard_skips_an_expert_no_token_chose(client):
    logits = client.from_array(np.array([[5.0, 0.0, 0.0]], np.float32))  # token 0 -> expert 0
    ids = client.alloc(1, np.int32)
    wts = client.alloc(1)
    y = client.from_array(np.full(4, 9.0, np.float32))
    src = client.from_array(np.ones(4, np.float32))
    g = client.graph()
    r = g.add("topk_router", [tandem.read(logits), tandem.write(ids), tandem.write(wts)],
              [tandem.i64(1), tandem.i64(3), tandem.i64(1)])
    t = g.add("axpy", [tandem.read(src), tandem.readwrite(y)], [1.0])
    g.guard(t, r, 1)  # expert 1: nobody
    g.run(timeout=10)
    np.testing.assert_array_equal(y.array, 9.0)  # untouched
    with pytest.raises(tandem.Error):
        g2 = client.graph()
        r = g2.add("topk_router", [tandem.read(logits), tandem.write(ids), tandem.write(wts)],
                   [tandem.i64(1), tandem.i64(3), tandem.i64(1)])
        t = g2.add("axpy", [tandem.read(src), tandem.readwrite(y)], [1.0])
        g2.guard(t, r, 3)  # no expert 3: rejected by the daemon
        g2.run(timeout=10)


def test_array_slices_name_buffer_ranges(client):
    x = client.alloc(64)
    g = client.graph()
    g.add("fill", [tandem.write(x.array[16:32])], [7.0])
    g.add("fill", [tandem.write(x.array[40:48])], [3.0])
    g.run(timeout=10)
    want = np.zeros(64, np.float32)
    want[16:32] = 7
    want[40:48] = 3
    np.testing.assert_array_equal(x.array, want)
    with pytest.raises(ValueError):
        g.add("fill", [tandem.write(x.array[::2])], [1.0])  # not contiguous


def test_array_keeps_its_buffer_alive(daemon, client):
    sid = client.session_id
    base = session(daemon, sid)["buffers"]
    b = client.from_array(np.full(1024, 3.0, np.float32))
    view = b.array[10:20]
    assert session(daemon, sid)["buffers"] == base + 1
    b.free()
    del b
    gc.collect()
    # the mapping is still there while the view lives
    assert session(daemon, sid)["buffers"] == base + 1
    np.testing.assert_array_equal(view, 3.0)
    del view
    gc.collect()
    assert session(daemon, sid)["buffers"] == base


def test_close_waits_for_the_last_array(daemon):
    c = tandem.Client(daemon.sock)
    sid = c.session_id
    a = c.alloc(16).array
    a[:] = 1
    c.close()
    with pytest.raises(tandem.Error):
        c.alloc(4)
    time.sleep(0.1)
    assert session(daemon, sid) is not None  # a still maps its buffer
    assert a.sum() == 16
    del a
    gc.collect()
    assert wait_gone(daemon, sid)


def test_close_without_arrays_disconnects(daemon):
    c = tandem.Client(daemon.sock)
    sid = c.session_id
    c.alloc(16)  # no array of it kept
    c.close()
    assert wait_gone(daemon, sid)


# ---- graphs -------------------------------------------------------------------


def test_inferred_dependencies_and_explicit_edges(client):
    y = client.alloc(1024)
    g = client.graph(task_info=True)
    # spin has no buffers: only the edge orders it before the fill
    s = g.add("spin", [], [20_000])
    f = g.add("fill", [tandem.write(y)], [1.0])
    a = g.add("axpy", [tandem.read(y), tandem.readwrite(y)], [1.0])  # after the fill (RAW)
    g.edge(s, f)
    assert len(g) == 3
    assert g.run(timeout=10) == 0
    np.testing.assert_array_equal(y.array, 2.0)
    si, fi, ai = g.task_info(s), g.task_info(f), g.task_info(a)
    assert si.end_ns <= fi.start_ns
    assert fi.end_ns <= ai.start_ns
    assert si.end_ns - si.start_ns >= 20_000_000
    for t in g.task_infos():
        assert t.status == 0
        assert t.device < client.device_count
        assert t.queued_ns <= t.start_ns <= t.end_ns


def test_wait_times_out_then_completes(client):
    g = client.graph()
    g.add("spin", [], [300_000])
    g.submit()
    with pytest.raises(tandem.WaitTimeout) as e:  # the spin runs 300 ms
        g.wait(timeout=0.02)
    assert isinstance(e.value, TimeoutError)
    assert e.value.code == tandem.Status.ETIMEDOUT
    assert g.wait(timeout=10) == 0


def test_hints_are_carried(client):
    x = client.alloc(4096)
    for policy in tandem.Policy:
        g = client.graph(priority=5, policy=policy,
                         deadline_ns=time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 10**9)
        g.add("fill", [tandem.write(x)], [float(policy)], priority=3)
        assert g.policy == policy and g.priority == 5
        assert g.run(timeout=10) == 0
        assert x.array[0] == float(policy)
    g.policy = "heft"
    assert g.policy == tandem.Policy.HEFT


def test_graph_resubmitted(client):
    x = client.alloc(256)
    g = client.graph()
    g.add("axpy", [tandem.read(client.from_array(np.ones(256, np.float32))),
                   tandem.readwrite(x)], [1.0])
    gc.collect()  # the graph keeps the unnamed input buffer alive
    for i in range(3):
        g.run(timeout=10)
    np.testing.assert_array_equal(x.array, 3.0)


def test_scalar_types(client):
    with pytest.raises(TypeError):
        client.graph().add("fill", [tandem.write(client.alloc(4))], ["x"])
    g = client.graph()
    with pytest.raises(tandem.Error) as e:  # fill's value is F32
        g.add("fill", [tandem.write(client.alloc(4))], [tandem.f64(1.0)])
    assert e.value.code == tandem.Status.EARITY
    g.add("fill", [tandem.write(client.alloc(4))], [np.float32(2)])
    g.add("spin", [], [np.int64(1)])
    assert len(g) == 2
