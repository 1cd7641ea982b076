/* Names of error codes and reject fields; shared by libtandem and tandemd. */
#include "tandem.h"

#define TDM_API __attribute__((visibility("default")))

static const char *const error_names[TDM_E__COUNT] = {
	[TDM_OK] = "success",
	[TDM_EINVAL] = "invalid argument",
	[TDM_ENOMEM] = "out of memory",
	[TDM_ECONNECT] = "cannot connect to tandemd",
	[TDM_EPERM] = "permission denied by tandemd (uid/gid not allowed)",
	[TDM_EVERSION] = "wire protocol version mismatch",
	[TDM_EPROTO] = "protocol violation",
	[TDM_EDISCONNECTED] = "disconnected from tandemd",
	[TDM_ETIMEDOUT] = "timed out",
	[TDM_EQUOTA] = "per-client quota exceeded",
	[TDM_EHANDLE] = "unknown buffer handle",
	[TDM_ERANGE] = "offset/length outside the buffer or wrong size for the kernel",
	[TDM_EKERNEL] = "unknown kernel",
	[TDM_EARITY] = "arguments do not match the kernel's signature",
	[TDM_EEDGE] = "edge does not point to an earlier task",
	[TDM_ECANCELED] = "canceled",
	[TDM_EDEVICE] = "kernel failed on its device",
	[TDM_ESHUTDOWN] = "tandemd is shutting down",
	[TDM_EBUSY] = "busy: too many clients or connections, or such a request runs already",
	[TDM_ESYS] = "system call failed",
	[TDM_ECONFIG] = "invalid configuration",
	[TDM_EPEER] = "the socket is not served by a tandemd we trust",
};

TDM_API const char *tdm_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= TDM_E__COUNT || !error_names[err])
		return "unknown error";
	return error_names[err];
}

static const char *const field_names[TDM_REJECT__COUNT] = {
	[TDM_REJECT_NONE] = "none",
	[TDM_REJECT_OP] = "entry op",
	[TDM_REJECT_RESERVED] = "reserved field not zero",
	[TDM_REJECT_NTASKS] = "task count",
	[TDM_REJECT_FLAGS] = "graph flags",
	[TDM_REJECT_TASK_INDEX] = "task index",
	[TDM_REJECT_KERNEL] = "kernel id",
	[TDM_REJECT_ARITY] = "argument count",
	[TDM_REJECT_MODE] = "access mode",
	[TDM_REJECT_HANDLE] = "buffer handle",
	[TDM_REJECT_RANGE] = "offset/length",
	[TDM_REJECT_SCALAR_TYPE] = "scalar type",
	[TDM_REJECT_EDGE] = "edge",
	[TDM_REJECT_KERNEL_ARGS] = "kernel-specific argument check",
	[TDM_REJECT_QUOTA] = "client quota",
	[TDM_REJECT_SEQUENCE] = "entry sequence",
	[TDM_REJECT_POLICY] = "policy hint",
	[TDM_REJECT_COST] = "predicted task cost",
};

TDM_API const char *tdm_reject_field_name(unsigned field)
{
	return field < TDM_REJECT__COUNT ? field_names[field] : "unknown field";
}
