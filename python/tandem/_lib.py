"""Loads libtandem and declares its C API for ctypes.

The structures and constants here mirror include/tandem.h and
include/tandem/wire.h; python/tests/test_layout.py compiles a C program
against those headers and checks every size, offset and value below.
"""

import ctypes
import os

# include/tandem/wire.h
MAX_ARGS = 8
MAX_SCALARS = 8
ACCESS_R, ACCESS_W, ACCESS_RW, ACCESS_ACC = 1, 2, 3, 7
SCALAR_I64, SCALAR_F64, SCALAR_F32 = 1, 2, 3
# include/tandem.h
BUF_WEIGHTS, BUF_KV, BUF_SCRATCH = 1, 2, 4
TIER_ANY, TIER_DEVICE, TIER_HOST = 0, 1, 2  # tandem/wire.h: KV tiers
POLICY_HINTS = ("DEFAULT", "EAGER", "DMDA", "HEFT", "PEFT", "PRIO")  # enum tdm_policy_hint


class ConnectOpts(ctypes.Structure):
    _fields_ = [
        ("socket_path", ctypes.c_char_p),
        ("spin_us", ctypes.c_uint32),
        ("daemon_uid", ctypes.c_uint32),
    ]


class Backoff(ctypes.Structure):
    _fields_ = [
        ("initial_ms", ctypes.c_uint32),
        ("max_ms", ctypes.c_uint32),
        ("total_ms", ctypes.c_uint32),
    ]


class KVAdmission(ctypes.Structure):
    _fields_ = [
        ("bytes_per_token", ctypes.c_uint64),
        ("context_tokens", ctypes.c_uint32),
        ("max_new_tokens", ctypes.c_uint32),
        ("tier", ctypes.c_uint32),
        ("predicted_new_tokens", ctypes.c_uint32),
        ("history", ctypes.c_uint32),
        ("peak_bytes", ctypes.c_uint64),
        ("device_free_bytes", ctypes.c_uint64),
        ("host_free_bytes", ctypes.c_uint64),
    ]


class Arg(ctypes.Structure):
    _fields_ = [
        ("buffer", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    ]


class ScalarValue(ctypes.Union):
    _fields_ = [
        ("i64", ctypes.c_int64),
        ("f64", ctypes.c_double),
        ("f32", ctypes.c_float),
        ("bits", ctypes.c_uint64),
    ]


class Scalar(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("v", ScalarValue)]


class TaskDesc(ctypes.Structure):
    _fields_ = [
        ("kernel", ctypes.c_uint32),
        ("nargs", ctypes.c_uint32),
        ("args", Arg * MAX_ARGS),
        ("nscalars", ctypes.c_uint32),
        ("scalars", Scalar * MAX_SCALARS),
        ("priority", ctypes.c_int32),
    ]


class TaskInfo(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int32),
        ("device", ctypes.c_uint32),
        ("queued_ns", ctypes.c_uint64),
        ("start_ns", ctypes.c_uint64),
        ("end_ns", ctypes.c_uint64),
        ("predicted_ns", ctypes.c_uint64),
        ("predicted_spread_ns", ctypes.c_uint64),
    ]


def _candidates():
    """Where libtandem is looked for, in order: $TANDEM_LIB, the installed
    soname, the development name, then the build tree next to this source
    tree (python/tandem -> build/lib)."""
    env = os.environ.get("TANDEM_LIB")
    if env:
        return [env]  # asked for this one: no fallback that would hide a typo
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.join(here, "..", "..", "build", "lib", "libtandem.so")
    return ["libtandem.so.1", "libtandem.so", os.path.normpath(tree)]


def _load():
    errors = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            errors.append("%s: %s" % (name, e))
    raise ImportError("tandem: cannot load libtandem (set TANDEM_LIB to its path):\n  "
                      + "\n  ".join(errors))


lib = _load()
if not hasattr(lib, "tdm_kv_admit"):
    raise ImportError("tandem: %s is too old (no tdm_kv_admit: TANDEM_2 as of 0.1.0)"
                      % lib._name)

_P = ctypes.c_void_p
_U32P = ctypes.POINTER(ctypes.c_uint32)
_SIGS = {
    "tdm_version": (ctypes.c_char_p, []),
    "tdm_strerror": (ctypes.c_char_p, [ctypes.c_int]),
    "tdm_error_symbol": (ctypes.c_char_p, [ctypes.c_int]),
    "tdm_reject_field_name": (ctypes.c_char_p, [ctypes.c_uint]),
    "tdm_reject_field_symbol": (ctypes.c_char_p, [ctypes.c_uint]),
    "tdm_default_socket_path": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]),
    "tdm_connect": (ctypes.c_int, [ctypes.POINTER(ConnectOpts), ctypes.POINTER(_P)]),
    "tdm_connect_backoff": (ctypes.c_int, [ctypes.POINTER(ConnectOpts), ctypes.POINTER(Backoff),
                                           ctypes.POINTER(_P)]),
    "tdm_disconnect": (None, [_P]),
    "tdm_session_id": (ctypes.c_uint32, [_P]),
    "tdm_device_count": (ctypes.c_uint32, [_P]),
    "tdm_buffer_alloc": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_uint32, _U32P,
                                        ctypes.POINTER(_P)]),
    "tdm_buffer_reserve": (ctypes.c_int, [_P, ctypes.c_size_t, ctypes.c_uint32, _U32P,
                                          ctypes.POINTER(_P)]),
    "tdm_buffer_grow": (ctypes.c_int, [_P, ctypes.c_uint32, ctypes.c_size_t]),
    "tdm_kv_admit": (ctypes.c_int, [_P, ctypes.c_uint32, ctypes.POINTER(KVAdmission)]),
    "tdm_buffer_free": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "tdm_kernel_lookup": (ctypes.c_int, [_P, ctypes.c_char_p, _U32P]),
    "tdm_graph_new": (_P, [_P]),
    "tdm_graph_free": (None, [_P]),
    "tdm_graph_want_task_info": (None, [_P, ctypes.c_int]),
    "tdm_graph_set_priority": (None, [_P, ctypes.c_int32]),
    "tdm_graph_set_policy": (None, [_P, ctypes.c_int]),
    "tdm_graph_set_deadline": (None, [_P, ctypes.c_uint64]),
    "tdm_graph_add_task": (ctypes.c_int, [_P, ctypes.POINTER(TaskDesc), _U32P]),
    "tdm_graph_add_edge": (ctypes.c_int, [_P, ctypes.c_uint32, ctypes.c_uint32]),
    "tdm_graph_set_guard": (ctypes.c_int, [_P, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32]),
    "tdm_graph_task_count": (ctypes.c_uint32, [_P]),
    "tdm_graph_submit": (ctypes.c_int, [_P]),
    "tdm_wait": (ctypes.c_int, [_P, ctypes.c_int64]),
    "tdm_graph_task_info": (ctypes.POINTER(TaskInfo), [_P, ctypes.c_uint32]),
    "tdm_graph_reject_detail": (None, [_P, _U32P, _U32P]),
}
for _name, (_res, _args) in _SIGS.items():
    _f = getattr(lib, _name)
    _f.restype = _res
    _f.argtypes = _args
