"""Clients, buffers and graphs over libtandem.

Lifetimes. A buffer's memory is a shared mapping that libtandem unmaps when
the buffer is freed or the client disconnects, so an ndarray over it must
never outlive either. Every array made from a buffer keeps the buffer's
mapping (a _Region) alive, the region keeps the session alive, and the
C calls that unmap run only when the last of them is gone:
Buffer.free() and Client.close() take effect at once when no array of
theirs is left, later otherwise. One lock per session serialises the C
calls (a tdm_client is for one thread at a time).

A lost daemon (DaemonLost, Disconnected) leaves the client's mappings in
place, so its arrays stay valid memory; Client.reconnect opens a new
session beside the dead one (not tdm_reconnect, which would unmap them at
once) and lets the dead one go by the same rule. A growable buffer's
arrays cover only the part declared in use, whose pages are backed: the
rest of its reservation is PROT_NONE.
"""

import ctypes
import enum
import threading
import weakref
from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from . import _lib
from ._lib import lib
from .errors import Error, Status, check

R, W, RW, ACC = _lib.ACCESS_R, _lib.ACCESS_W, _lib.ACCESS_RW, _lib.ACCESS_ACC
WEIGHTS, KV, SCRATCH = _lib.BUF_WEIGHTS, _lib.BUF_KV, _lib.BUF_SCRATCH

Policy = enum.IntEnum("Policy", [(n, v) for v, n in enumerate(_lib.POLICY_HINTS)])
Policy.__doc__ = "Which policy should place a graph (enum tdm_policy_hint): a hint."

TaskInfo = namedtuple("TaskInfo", "status device queued_ns start_ns end_ns predicted_ns "
                      "predicted_spread_ns")
TaskInfo.__doc__ = ("Where and when a task ran (CLOCK_MONOTONIC ns) and what the cost "
                    "model expected of end_ns - start_ns.")

Kernel = namedtuple("Kernel", "name id")

Tier = enum.IntEnum("Tier", [("ANY", _lib.TIER_ANY), ("DEVICE", _lib.TIER_DEVICE),
                             ("HOST", _lib.TIER_HOST)])
Tier.__doc__ = "Where a request's KV lives (TDM_TIER_*); ANY lets the daemon choose."


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter between connection attempts
    (struct tdm_backoff): the k-th pause is drawn in [d/2, d], d =
    min(max_ms, initial_ms * 2^k); total_ms is when to give up. 0 takes
    libtandem's default (10 ms, 1 s, 30 s)."""

    initial_ms: int = 0
    max_ms: int = 0
    total_ms: int = 0


@dataclass(frozen=True)
class KVAdmission:
    """The daemon's answer to Client.kv_admit: the tier the request's KV
    went to, the new tokens it expects the request to generate and how many
    of this client's past output lengths that guess rests on, the predicted
    peak KV of that tier (the request included), and what each tier can
    still take."""

    tier: Tier
    predicted_new_tokens: int
    history: int
    peak_bytes: int
    device_free_bytes: int
    host_free_bytes: int


class Arg(namedtuple("Arg", "target mode offset length")):
    """A task's buffer argument: target is a Buffer or an ndarray over one
    (then offset and length come from the array unless given, in bytes)."""

    __slots__ = ()


def read(target, offset=None, length=None):
    return Arg(target, R, offset, length)


def write(target, offset=None, length=None):
    return Arg(target, W, offset, length)


def readwrite(target, offset=None, length=None):
    return Arg(target, RW, offset, length)


def accumulate(target, offset=None, length=None):
    """Adds into the range (TDM_ACC, for the arguments a kernel allows):
    tasks accumulating into the same range are not ordered among
    themselves; their contributions are added in task order."""
    return Arg(target, ACC, offset, length)


class _Typed(namedtuple("_Typed", "type value")):
    __slots__ = ()


def i64(v):
    return _Typed(_lib.SCALAR_I64, int(v))


def f32(v):
    return _Typed(_lib.SCALAR_F32, float(v))


def f64(v):
    return _Typed(_lib.SCALAR_F64, float(v))


def _scalar(v, out):
    """Python and numpy integers are I64, reals F32 (every built-in kernel's
    real scalar is F32); i64(), f32(), f64() say it explicitly."""
    if isinstance(v, _Typed):
        t, v = v
    elif isinstance(v, (bool, np.bool_)):
        raise TypeError("tandem: a bool is not a kernel scalar")
    elif isinstance(v, (int, np.integer)):
        t = _lib.SCALAR_I64
    elif isinstance(v, (float, np.floating)):
        t = _lib.SCALAR_F32
    else:
        raise TypeError("tandem: scalar %r is neither an integer nor a real" % (v,))
    out.type = t
    if t == _lib.SCALAR_I64:
        out.v.i64 = int(v)
    elif t == _lib.SCALAR_F32:
        out.v.f32 = float(v)
    else:
        out.v.f64 = float(v)


class _Session:
    """The tdm_client; disconnected when the last holder lets go."""

    def __init__(self, ptr):
        self.ptr = ptr
        self.lock = threading.RLock()
        self.regions = {}  # handle -> weakref to _Region
        self._fin = weakref.finalize(self, lib.tdm_disconnect, ptr)
        self._fin.atexit = False  # the process's exit closes the session anyway


def _release_buffer(session, handle):
    with session.lock:
        session.regions.pop(handle, None)
        lib.tdm_buffer_free(session.ptr, handle)


class _Region:
    """One buffer's mapping; numpy arrays over it hold it as their base.
    nbytes: the usable bytes (of a growable buffer, the part declared in
    use; it only grows, so an array made earlier stays inside)."""

    def __init__(self, session, handle, addr, nbytes):
        self.session = session
        self.handle = handle
        self.addr = addr
        self.nbytes = nbytes
        self._fin = weakref.finalize(self, _release_buffer, session, handle)
        self._fin.atexit = False

    @property
    def __array_interface__(self):
        return {"data": (self.addr, False), "shape": (self.nbytes,), "typestr": "|u1",
                "version": 3}


class Buffer:
    """Shared memory the daemon's tasks read and write: buf.array is an
    ndarray over it (no copy), buf.view() another view of its bytes.

    A growable buffer (Client.reserve) has capacity bytes of address space
    of which nbytes, as declared with grow(), are usable: buf.array (1-D of
    its dtype) and every view cover only those, and grow() replaces
    buf.array with a longer one (arrays taken before keep their length)."""

    def __init__(self, region, shape, dtype, flags, capacity=None):
        self._region = region
        self._gone = "was freed"
        self.handle = region.handle
        self.nbytes = region.nbytes
        self.flags = flags
        self.growable = capacity is not None
        self.capacity = region.nbytes if capacity is None else capacity
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.array = self.view(self.dtype, shape)

    def grow(self, used):
        """Declares [0, used) bytes of a growable buffer in use (tdm_buffer_grow)
        and returns the new buf.array over them. used never goes down
        (EINVAL); past the capacity: Error ERANGE; over the quota: EQUOTA,
        and the buffer stays as it was."""
        region = self._live()
        if not self.growable:
            raise Error(-Status.EINVAL, "tandem: buffer %d is not growable (Client.reserve)"
                        % self.handle)
        s = region.session
        with s.lock:
            check(lib.tdm_buffer_grow(s.ptr, self.handle, int(used)), "tdm_buffer_grow")
            region.nbytes = int(used)
        self.nbytes = region.nbytes
        self.shape = (self.nbytes // self.dtype.itemsize,)
        self.array = self.view(self.dtype, self.shape)
        return self.array

    def view(self, dtype=np.uint8, shape=None, offset=0):
        """An ndarray over the buffer's bytes from offset (C order)."""
        region = self._live()
        dtype = np.dtype(dtype)
        raw = np.asarray(region)
        if offset < 0 or offset > region.nbytes or offset % dtype.itemsize:
            raise ValueError("tandem: offset %d does not fit %s in %d bytes"
                             % (offset, dtype, region.nbytes))
        count = (region.nbytes - offset) // dtype.itemsize
        if shape is None:
            shape = (count,)
        shape = tuple(shape) if np.iterable(shape) else (shape,)
        n = int(np.prod(shape, dtype=np.int64))
        if n > count:
            raise ValueError("tandem: %s of %s needs %d bytes from offset %d, the buffer has %d"
                             % (shape, dtype, n * dtype.itemsize, offset, region.nbytes))
        return raw[offset:offset + n * dtype.itemsize].view(dtype).reshape(shape)

    def free(self):
        """Releases the buffer (at the daemon once no array over it is left;
        graphs already submitted keep it there until they end)."""
        self._region = None
        self.array = None

    def _lose(self):
        """Its client reconnected: the buffer is of the dead session."""
        self._gone = "is of a lost connection (allocate it anew)"
        self.free()

    def _live(self):
        if self._region is None:
            raise ValueError("tandem: buffer %d %s" % (self.handle, self._gone))
        return self._region

    def __repr__(self):
        return "<tandem.Buffer %d: %d bytes%s%s>" % (
            self.handle, self.nbytes, " of %d" % self.capacity if self.growable else "",
            "" if self._region else ", " + self._gone)


def _connect(opts, backoff):
    """A new tdm_client: tdm_connect once (backoff None), or
    tdm_connect_backoff (backoff True: the defaults, or a Backoff)."""
    ptr = ctypes.c_void_p()
    if backoff is None or backoff is False:
        check(lib.tdm_connect(ctypes.byref(opts), ctypes.byref(ptr)), "tdm_connect")
    else:
        b = Backoff() if backoff is True else backoff
        cb = _lib.Backoff(b.initial_ms, b.max_ms, b.total_ms)
        check(lib.tdm_connect_backoff(ctypes.byref(opts), ctypes.byref(cb), ctypes.byref(ptr)),
              "tdm_connect_backoff")
    return _Session(ptr.value)


class Client:
    """A connection to tandemd. socket: its path (None: $TANDEM_SOCKET, then
    the default path); spin_us: spin this long on completions before
    sleeping in wait; daemon_uid: the uid the daemon must run as (0: root or
    ours); backoff: None connects once, True or a Backoff tries again while
    the daemon is not there or not ready (tdm_connect_backoff)."""

    def __init__(self, socket=None, spin_us=0, daemon_uid=0, backoff=None):
        self._opts = _lib.ConnectOpts(socket.encode() if isinstance(socket, str) else socket,
                                      spin_us, daemon_uid)
        self._session = _connect(self._opts, backoff)
        self._kernels = {}
        self._graphs = weakref.WeakSet()
        self._buffers = weakref.WeakSet()

    @classmethod
    def connect_backoff(cls, socket=None, backoff=True, **kw):
        """Client(socket, backoff=backoff, ...): waits for a daemon that is
        starting or restarting (Error ECONNECT and the like once
        backoff.total_ms has passed)."""
        return cls(socket, backoff=backoff, **kw)

    def reconnect(self, backoff=True):
        """Connects anew with this client's options after DaemonLost or
        Disconnected (with backoff as in the constructor; the default: try
        for up to 30 s). Nothing of the old session carries over: its graphs
        are freed, its Buffers unusable (allocate them anew), its kernel
        ids looked up again; arrays over its buffers stay valid memory
        until released, and the old session ends with the last of them.
        On failure the client is left as it was."""
        self._s()
        fresh = _connect(self._opts, backoff)
        for g in list(self._graphs):
            g._drop("the graph's client reconnected")
        for b in list(self._buffers):
            b._lose()
        self._kernels = {}
        self._session = fresh

    # ---- the session -----------------------------------------------------

    def _s(self):
        if self._session is None:
            raise Error(-Status.EINVAL, "tandem: the client is closed")
        return self._session

    @property
    def session_id(self):
        return lib.tdm_session_id(self._s().ptr)

    @property
    def device_count(self):
        return lib.tdm_device_count(self._s().ptr)

    @property
    def closed(self):
        return self._session is None

    def close(self):
        """Ends the session: at once when no array over one of its buffers
        is alive, when the last one goes otherwise. Graphs are freed
        (in-flight ones forgotten) and buffers released."""
        s = self._session
        if s is None:
            return
        for g in list(self._graphs):
            g._drop("the graph's client is closed")
        for b in list(self._buffers):
            b.free()
        self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- buffers -----------------------------------------------------------

    def alloc(self, shape, dtype=np.float32, flags=0):
        """A zeroed buffer holding an array of this shape and dtype."""
        s = self._s()
        dtype = np.dtype(dtype)
        shape = tuple(shape) if np.iterable(shape) else (shape,)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        handle = ctypes.c_uint32()
        ptr = ctypes.c_void_p()
        with s.lock:
            check(lib.tdm_buffer_alloc(s.ptr, nbytes, flags, ctypes.byref(handle),
                                       ctypes.byref(ptr)), "tdm_buffer_alloc")
            region = _Region(s, handle.value, ptr.value, nbytes)
            s.regions[handle.value] = weakref.ref(region)
        b = Buffer(region, shape, dtype, flags)
        self._buffers.add(b)
        return b

    def reserve(self, capacity, dtype=np.float32, flags=KV):
        """A growable buffer (a KV cache that grows as tokens arrive):
        capacity bytes of address space, nothing in use or charged to the
        quota until Buffer.grow(used) declares it. flags must include KV."""
        s = self._s()
        handle = ctypes.c_uint32()
        ptr = ctypes.c_void_p()
        with s.lock:
            check(lib.tdm_buffer_reserve(s.ptr, int(capacity), flags, ctypes.byref(handle),
                                         ctypes.byref(ptr)), "tdm_buffer_reserve")
            region = _Region(s, handle.value, ptr.value, 0)
            s.regions[handle.value] = weakref.ref(region)
        b = Buffer(region, (0,), dtype, flags, capacity=int(capacity))
        self._buffers.add(b)
        return b

    def kv_admit(self, buf=None, bytes_per_token=0, context_tokens=0, max_new_tokens=0,
                 tier=Tier.ANY):
        """Admits a request whose KV is growable buffer buf (tdm_kv_admit):
        its prompt (context_tokens), its output limit (max_new_tokens) and
        bytes_per_token; tier: ANY, or the tier wanted. Returns a
        KVAdmission; Error EQUOTA when even the host tier cannot hold its
        predicted peak (queue it). Call again to have the tier decided anew.
        buf None only asks: device_free_bytes and host_free_bytes are the
        answer (the other arguments must be left 0)."""
        s = self._s()
        handle = 0
        if buf is not None:
            region = buf._live()
            if region.session is not s:
                raise ValueError("tandem: buffer %d belongs to another client" % buf.handle)
            handle = region.handle
        a = _lib.KVAdmission(bytes_per_token=bytes_per_token, context_tokens=context_tokens,
                             max_new_tokens=max_new_tokens, tier=int(tier))
        with s.lock:
            check(lib.tdm_kv_admit(s.ptr, handle, ctypes.byref(a)), "tdm_kv_admit")
        return KVAdmission(Tier(a.tier), a.predicted_new_tokens, a.history, a.peak_bytes,
                           a.device_free_bytes, a.host_free_bytes)

    def from_array(self, data, flags=0):
        """A buffer initialised with a copy of data (its shape and dtype)."""
        data = np.asarray(data)
        b = self.alloc(data.shape, data.dtype, flags)
        b.array[...] = data
        return b

    # ---- kernels and graphs -------------------------------------------------

    def kernel(self, name):
        """The kernel of that name (tdm_kernel_lookup)."""
        if isinstance(name, Kernel):
            return name
        k = self._kernels.get(name)
        if k is None:
            s = self._s()
            kid = ctypes.c_uint32()
            with s.lock:
                check(lib.tdm_kernel_lookup(s.ptr, name.encode(), ctypes.byref(kid)),
                      "kernel %r" % name)
            k = self._kernels[name] = Kernel(name, kid.value)
        return k

    def graph(self, task_info=False, priority=0, policy=Policy.DEFAULT, deadline_ns=0):
        g = Graph(self, task_info, priority, policy, deadline_ns)
        self._graphs.add(g)
        return g

    def _arg(self, a, out):
        """Fills a C tdm_arg from an Arg; returns the region it names."""
        s = self._s()
        target, mode, offset, length = a
        if isinstance(target, Buffer):
            region = target._live()
            if region.session is not s:
                raise ValueError("tandem: buffer %d belongs to another client" % target.handle)
            off = 0 if offset is None else offset
            ln = region.nbytes - off if length is None else length
        elif isinstance(target, np.ndarray):
            if not target.flags.c_contiguous:
                raise ValueError("tandem: a task argument must be a contiguous array")
            addr = target.__array_interface__["data"][0]
            region = self._region_at(addr, target.nbytes)
            off = addr - region.addr if offset is None else offset
            ln = target.nbytes if length is None else length
        else:
            raise TypeError("tandem: an argument is a Buffer or an ndarray over one, not %s"
                            % type(target).__name__)
        if ln <= 0:
            raise ValueError("tandem: an empty argument (length 0)")
        out.buffer = region.handle
        out.mode = mode
        out.offset = off
        out.length = ln
        return region

    def _region_at(self, addr, nbytes):
        with self._s().lock:
            refs = list(self._s().regions.values())
        for ref in refs:
            r = ref()
            if r is not None and r.addr <= addr and addr + nbytes <= r.addr + r.nbytes:
                return r
        raise ValueError("tandem: the array is not inside a buffer of this client")


class Graph:
    """Tasks over buffers, submitted and waited for as one. Dependencies are
    inferred from the access modes in the order tasks are added; edge()
    adds more."""

    def __init__(self, client, task_info, priority, policy, deadline_ns):
        s = client._s()
        self._client = client
        self._session = s
        ptr = lib.tdm_graph_new(s.ptr)
        if not ptr:
            raise MemoryError("tdm_graph_new")
        self._ptr = ptr
        self._gone = None
        self._fin = weakref.finalize(self, _free_graph, s, ptr)
        self._fin.atexit = False
        self._regions = []  # the buffers its tasks name stay alive with it
        self._names = []
        self._submitted = False
        self.task_info_wanted = bool(task_info)
        lib.tdm_graph_want_task_info(ptr, int(bool(task_info)))
        self.priority = priority
        self.policy = policy
        self.deadline_ns = deadline_ns

    def _g(self):
        if self._ptr is None:
            raise Error(-Status.EINVAL, "tandem: " + self._gone)
        return self._ptr

    def _lock(self):
        """The session's lock (taken before _g(), which is checked under it:
        _drop frees the graph under the same lock)."""
        if self._session is None:
            self._g()  # raises why
        return self._session.lock

    def _drop(self, why):
        """Frees the C graph; the session and buffers are no longer held."""
        if self._ptr is not None:
            self._fin()
            self._ptr = None
            self._gone = why
            self._session = None
            self._regions = []

    @property
    def priority(self):
        return self._priority

    @priority.setter
    def priority(self, v):
        lib.tdm_graph_set_priority(self._g(), int(v))
        self._priority = int(v)

    @property
    def policy(self):
        return self._policy

    @policy.setter
    def policy(self, v):
        """A Policy, or its name; the daemon rejects an unknown value."""
        v = Policy[v.upper()] if isinstance(v, str) else v
        lib.tdm_graph_set_policy(self._g(), int(v))
        self._policy = v

    @property
    def deadline_ns(self):
        return self._deadline

    @deadline_ns.setter
    def deadline_ns(self, v):
        lib.tdm_graph_set_deadline(self._g(), int(v))
        self._deadline = int(v)

    def __len__(self):
        return lib.tdm_graph_task_count(self._g())

    def add(self, kernel, args=(), scalars=(), priority=0):
        """Appends a task; returns its index. kernel: a name or a Kernel;
        args: Args (read/write/readwrite of Buffers or arrays over them);
        scalars: ints (I64), reals (F32), or i64/f32/f64 values."""
        k = self._client.kernel(kernel)
        if len(args) > _lib.MAX_ARGS or len(scalars) > _lib.MAX_SCALARS:
            raise Error(-Status.EARITY, "task %s" % k.name)
        desc = _lib.TaskDesc()
        desc.kernel = k.id
        desc.nargs = len(args)
        desc.nscalars = len(scalars)
        desc.priority = int(priority)
        regions = [self._client._arg(a, desc.args[i]) for i, a in enumerate(args)]
        for i, v in enumerate(scalars):
            _scalar(v, desc.scalars[i])
        index = ctypes.c_uint32()
        with self._lock():
            check(lib.tdm_graph_add_task(self._g(), ctypes.byref(desc), ctypes.byref(index)),
                  "task %d (%s)" % (len(self._names), k.name))
        self._regions.extend(regions)
        self._names.append(k.name)
        return index.value

    def edge(self, before, after):
        """Task `after` runs after task `before` (before < after)."""
        check(lib.tdm_graph_add_edge(self._g(), before, after), "edge %d -> %d" % (before, after))

    def guard(self, task, router, expert):
        """Task `task` runs only if some token of topk_router task `router`
        (router < task) chose `expert`; else it completes unrun."""
        check(lib.tdm_graph_set_guard(self._g(), task, router, expert),
              "guard on task %d" % task)

    def submit(self):
        with self._lock():
            check(lib.tdm_graph_submit(self._g()), "tdm_graph_submit")
        self._submitted = True

    def wait(self, timeout=None):
        """Waits for the graph (timeout in seconds; None: for ever). Raises
        WaitTimeout when the time is up (the graph still runs), Error with
        the offending task and field when it was rejected or failed,
        DaemonLost at once when tandemd's process ends (Disconnected when
        the connection closed otherwise): Client.reconnect."""
        ns = -1 if timeout is None else max(0, int(timeout * 1e9))
        with self._lock():
            st = lib.tdm_wait(self._g(), ns)
        if st == -Status.ETIMEDOUT or st >= 0:
            return check(st, "tdm_wait")
        task, field = ctypes.c_uint32(), ctypes.c_uint32()
        lib.tdm_graph_reject_detail(self._g(), ctypes.byref(task), ctypes.byref(field))
        what = "graph"
        if field.value and task.value < len(self._names):
            what = "graph (task %d: %s)" % (task.value, self._names[task.value])
        return check(st, what, task=task.value, field=field.value)

    def run(self, timeout=None):
        """submit() then wait(timeout)."""
        self.submit()
        return self.wait(timeout)

    def task_info(self, index):
        """Where and when task index ran (a graph made with task_info=True,
        after wait returned)."""
        p = lib.tdm_graph_task_info(self._g(), index)
        if not p:
            raise ValueError("tandem: no task info for task %d (task_info=True, waited, "
                             "index < %d?)" % (index, len(self)))
        i = p.contents
        return TaskInfo(i.status, i.device, i.queued_ns, i.start_ns, i.end_ns,
                        i.predicted_ns, i.predicted_spread_ns)

    def task_infos(self):
        return [self.task_info(i) for i in range(len(self))]


def _free_graph(session, ptr):
    with session.lock:
        lib.tdm_graph_free(ptr)
