"""tandem: a Python binding of libtandem, the client library of tandemd.

    import numpy as np, tandem
    with tandem.Client() as c:                      # $TANDEM_SOCKET or the default
        x = c.from_array(np.ones(1024, np.float32))
        y = c.alloc(1024)                            # float32, zeroed; y.array is a view
        g = c.graph(task_info=True)
        g.add("axpy", [tandem.read(x.array), tandem.readwrite(y.array)], [2.0])
        g.run(timeout=5.0)
        print(y.array[:4], g.task_info(0).device)

libtandem is found through $TANDEM_LIB, else the installed libtandem.so.1,
else libtandem.so. Errors are tandem.Error (status, code, task, field);
tandem.WaitTimeout when a wait times out.
"""

from .client import (ACC, KV, R, RW, SCRATCH, W, WEIGHTS, Arg, Buffer, Client, Graph, Kernel,
                     Policy, TaskInfo, accumulate, f32, f64, i64, read, readwrite, write)
from .errors import Error, RejectField, Status, WaitTimeout, reject_field_name, strerror

__all__ = [
    "ACC", "Arg", "Buffer", "Client", "Error", "Graph", "KV", "Kernel", "Policy", "R", "RW",
    "RejectField", "SCRATCH", "Status", "TaskInfo", "W", "WEIGHTS", "WaitTimeout", "accumulate",
    "f32", "f64", "i64", "read", "readwrite", "reject_field_name", "strerror", "write",
]
__version__ = "1.0"
