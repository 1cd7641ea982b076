/* tandemd configuration: defaults, loading from TOML, validation.
 *
 * The schema is a table of keys; toml_shim walks the document in source
 * order and each node is checked against that table and stored into a copy
 * of the defaults, which replaces the caller's configuration only if the
 * whole document is valid.
 */
#include "daemon/config.h"
#include "engine/engine.h"
#include "policies/policy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/size.h"
#include "common/toml_shim.h"
#include "tandem.h"

#define CONFIG_FILE_MAX (1u << 20)

/* The default configuration; config_defaults() must give the same values
 * (a unit test checks it) and every key of the schema must appear here. */
const char config_default_toml[] =
        "# tandemd configuration.\n"
        "#\n"
        "# Every key is optional: a key left out keeps the value shown here, which\n"
        "# is its default. Only ASCII text is accepted. Unknown sections and keys,\n"
        "# values of the wrong type and values out of range are errors.\n"
        "\n"
        "[daemon]\n"
        "# Path of the daemon's Unix socket: an absolute path shorter than 108\n"
        "# bytes, or \"\" for the default ($XDG_RUNTIME_DIR/tandem/tandemd.sock for a\n"
        "# user, /run/tandem/tandemd.sock for root).\n"
        "socket = \"\"\n"
        "# \"error\", \"warn\", \"info\" or \"debug\".\n"
        "log_level = \"info\"\n"
        "# User ids (0 to 4294967294, at most 64) that may connect, besides the\n"
        "# daemon's own uid and root, which always may.\n"
        "allowed_uids = []\n"
        "# Groups, by name or id (0 to 4294967294, at most 64), whose members may\n"
        "# connect, the peer's primary and supplementary groups alike. A name is\n"
        "# looked up when the file is loaded, and must exist.\n"
        "allowed_gids = []\n"
        "# User ids (at most 64) that see every client in `tandemctl status` and\n"
        "# may read the cost models, calibrate, export the machine and record\n"
        "# everyone's graphs, besides root and the daemon's own uid, which always\n"
        "# may. Other users see and record their own clients only.\n"
        "admin_uids = []\n"
        "# Groups, by name or id (at most 64), whose members are administrators\n"
        "# as above.\n"
        "admin_gids = []\n"
        "# Clients connected at once (1 to 4096).\n"
        "max_clients = 64\n"
        "# Clients of one user connected at once (1 to 4096). This and the other\n"
        "# per-uid limits do not apply to root and the daemon's own uid.\n"
        "max_clients_per_uid = 16\n"
        "# Connections open at once, whether they said hello or not, tandemctl's\n"
        "# included (16 to 65536). Peers that may not connect are refused at once.\n"
        "max_connections = 1024\n"
        "# Connections of one user open at once (1 to 65536).\n"
        "max_connections_per_uid = 64\n"
        "# Where calibration and learned cost models are kept: an absolute path\n"
        "# shorter than 256 bytes, or \"\" for the default ($XDG_STATE_HOME/tandem,\n"
        "# else ~/.local/state/tandem, for a user; /var/lib/tandem for root).\n"
        "# The daemon's own: created 0700; one that is a symbolic link or belongs\n"
        "# to another uid is not used.\n"
        "state_dir = \"\"\n"
        "# On SIGTERM, seconds to let the graphs in flight finish (0 to 3600);\n"
        "# then they are canceled (running kernels stop at their next check) and\n"
        "# the daemon exits a few seconds later at most.\n"
        "drain_timeout_s = 30\n"
        "\n"
        "[engine]\n"
        "# Scheduling policy, by its registered name ([a-z0-9_], 1 to 31 chars).\n"
        "# dmda places each ready task where it is predicted to finish first,\n"
        "# transfers included; eager and fifo ignore costs; llm is dmda that\n"
        "# also decides where LLM KV caches live and where their attention runs\n"
        "# (tandemd --list-policies, docs/policies.md, docs/llm.md).\n"
        "policy = \"dmda\"\n"
        "# Microseconds a worker spins for new work before it sleeps (0 to 10000).\n"
        "spin_us = 50\n"
        "# A policy that holds ready tasks while every worker idles this many\n"
        "# milliseconds, or hands out a task wrongly, is replaced by a plain FIFO\n"
        "# (10 to 60000).\n"
        "watchdog_ms = 500\n"
        "\n"
        "[policy]\n"
        "# dmda and prio place each ready task where alpha * (finish - best finish)\n"
        "# + beta * transfer time is least. alpha, 0 to 1000:\n"
        "dmda_alpha = 1.0\n"
        "# beta, 0 to 1000:\n"
        "dmda_beta = 1.0\n"
        "# heft and peft: candidate task orders tried per graph besides the\n"
        "# published one; the shortest plan wins (0 to 10000).\n"
        "plan_refine_iters = 0\n"
        "# heft and peft: plan the rest of a graph again when tasks take longer\n"
        "# or shorter than predicted by more than the model's spread.\n"
        "plan_repair = true\n"
        "# llm: keep fewer KV caches on the accelerator than devices.mem_cap\n"
        "# holds when the cost models predict a shorter step with their\n"
        "# attention on the cores (false: fill the accelerator's KV budget).\n"
        "llm_tiers_by_cost = true\n"
        "\n"
        "[clients]\n"
        "# Each client's share of every device relative to the others (1 to 1000).\n"
        "default_weight = 1\n"
        "# Per user name or decimal uid, such as { alice = 4, 1001 = 2 }.\n"
        "weights = {}\n"
        "# Policy hint per user name or uid for graphs that give none: \"eager\",\n"
        "# \"dmda\", \"heft\", \"peft\" or \"prio\", such as { batch = \"heft\" }.\n"
        "# Honoured under the policies dmda, heft, peft, prio and llm.\n"
        "policies = {}\n"
        "\n"
        "[cpu]\n"
        "# OS indexes of the cores to run CPU workers on (0 to 1023, each at most\n"
        "# once); [] means every core of the daemon's cpuset.\n"
        "cores = []\n"
        "\n"
        "[devices]\n"
        "# Devices to use, by name (\"cpu0\", \"clcpu0\", \"cuda0\", ...) or class\n"
        "# (\"cpu\", \"clcpu\", \"gpu\", \"npu\"); [] means every device found.\n"
        "# On SIGHUP the devices in use follow include and exclude: those left\n"
        "# out are drained and removed, found ones now selected are added\n"
        "# (docs/elastic.md).\n"
        "include = []\n"
        "# Devices to leave alone, by name or class (applied after include).\n"
        "exclude = []\n"
        "# Tasks enqueued at once on each accelerator (1 to 64): the next tasks'\n"
        "# inputs are copied while the current one computes.\n"
        "pipeline_depth = 4\n"
        "# Device memory tandem may use, per device name or class: a size as in\n"
        "# [limits], such as { gpu = \"8GiB\", clcpu0 = \"256MiB\" }. A device not\n"
        "# listed may use all of its memory. A change applies on SIGHUP.\n"
        "mem_cap = {}\n"
        "# Testing: make the next N launches on a device fail as device faults,\n"
        "# such as { clcpu0 = 1 } (0 to 1000000).\n"
        "fault_inject = {}\n"
        "# A device that failed more launches than this as device faults leaves\n"
        "# (\"gone\" in tandemctl devices) once its tasks moved (1 to 1000).\n"
        "fault_limit = 16\n"
        "\n"
        "[opencl]\n"
        "# Use OpenCL devices (every platform of the ICD loader).\n"
        "enabled = true\n"
        "\n"
        "[cuda]\n"
        "# Use CUDA devices (through the tandem-cuda.so plugin).\n"
        "enabled = true\n"
        "# Path of the plugin; \"\" means ../lib/tandem-cuda.so next to tandemd, then\n"
        "# ../lib/tandem/tandem-cuda.so (where make install puts it), then\n"
        "# $TANDEM_CUDA_PLUGIN.\n"
        "plugin = \"\"\n"
        "\n"
        "[profiler]\n"
        "# Measure every device and link at start-up (about a second; cached in\n"
        "# state_dir and measured again when the hardware changes). false: generic\n"
        "# figures until tasks have been measured.\n"
        "calibrate = true\n"
        "# Load the learned cost models from state_dir at start and save them\n"
        "# there (merged with other daemons' of this host).\n"
        "persist_models = true\n"
        "# Seconds between saves of the models (0 to 86400; 0: only at shutdown).\n"
        "save_interval_s = 60\n"
        "\n"
        "[limits]\n"
        "# Per-client limits first, then per-user and daemon-wide ones.\n"
        "# Bytes of shared buffers a client may hold (4096 to 2^48): an integer or\n"
        "# a string with a unit, B, KiB, MiB, GiB or TiB, such as \"512MiB\".\n"
        "buffer_quota_bytes = 1073741824\n"
        "# Buffers a client may hold at once (1 to 1048576).\n"
        "max_buffers = 4096\n"
        "# Tasks of a client submitted and not yet complete (1 to 16777216).\n"
        "max_tasks_in_flight = 1048576\n"
        "# Tasks in one graph (1 to 4194304).\n"
        "max_tasks_per_graph = 1048576\n"
        "# Graphs of a client submitted and whose completion it has not yet\n"
        "# been given (1 to 65536).\n"
        "max_graphs_in_flight = 1024\n"
        "# A task is refused (-TDM_EQUOTA, field \"predicted task cost\") when the\n"
        "# least time it could take exceeds this many milliseconds: its flops\n"
        "# and bytes at the calibrated sgemm rate and memory bandwidth of the\n"
        "# fastest device that runs its kernel (0 to 86400000; 0: no limit).\n"
        "max_task_ms = 1000\n"
        "# Bytes of shared buffers all clients of one user may hold together\n"
        "# (4096 to 2^48), as buffer_quota_bytes.\n"
        "uid_buffer_quota_bytes = \"4GiB\"\n"
        "# Buffers all clients of one user may hold at once (1 to 16777216).\n"
        "uid_max_buffers = 8192\n"
        "# Buffers and rings the daemon maps at once, over all clients (each is\n"
        "# one memory mapping; 0 to 16777216): 0 means half of vm.max_map_count,\n"
        "# so that the daemon and its device drivers keep room for their own.\n"
        "max_mappings = 0\n"
        "\n"
        "[metrics]\n"
        "# Serve Prometheus metrics at /metrics (HTTP GET) on this address: \"\" (off),\n"
        "# \"host:port\" with an IPv4 address or a bracketed IPv6 one (such as\n"
        "# \"127.0.0.1:9464\"; port 0 takes a free one, shown by tandemctl status), or\n"
        "# \"unix:/absolute/path\" (a socket of mode 0660). Aggregate figures only,\n"
        "# no per-client labels; anyone who can reach the address can read them:\n"
        "# keep it on loopback or a Unix socket.\n"
        "listen = \"\"\n"
        "# Metrics connections open at once (1 to 1024); more wait to be accepted.\n"
        "max_connections = 8\n"
        "\n"
        "[rings]\n"
        "# Entries of each client's submission ring (power of two, 64 to 65536).\n"
        "sq_entries = 4096\n"
        "# Entries of each client's completion ring (power of two, 64 to 65536).\n"
        "cq_entries = 8192\n";

void config_defaults(struct daemon_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->socket_path[0] = '\0';
	cfg->log_level = LOG_INFO;
	cfg->n_allowed_uids = 0;
	cfg->n_allowed_gids = 0;
	cfg->max_clients = 64;
	cfg->drain_timeout_s = 30;
	cfg->max_clients_per_uid = 16;
	cfg->max_connections = 1024;
	cfg->max_connections_per_uid = 64;

	strcpy(cfg->policy, "dmda");
	_Static_assert(ENGINE_SPIN_US_DEFAULT == 50, "the default file above says spin_us = 50");
	cfg->spin_us = ENGINE_SPIN_US_DEFAULT;
	cfg->watchdog_ms = 500;

	cfg->dmda_alpha = 1.0;
	cfg->dmda_beta = 1.0;
	cfg->plan_refine_iters = 0;
	cfg->plan_repair = 1;
	cfg->llm_tiers_by_cost = 1;

	cfg->default_weight = 1;

	cfg->n_cores = 0;

	cfg->pipeline_depth = 4;
	cfg->fault_limit = ENGINE_FAULT_LIMIT;
	cfg->opencl_enabled = 1;
	cfg->cuda_enabled = 1;

	cfg->calibrate = 1;
	cfg->persist_models = 1;
	cfg->save_interval_s = 60;

	cfg->buffer_quota_bytes = UINT64_C(1) << 30;
	cfg->max_buffers = 4096;
	cfg->max_tasks_in_flight = 1048576;
	cfg->max_tasks_per_graph = 1048576;
	cfg->max_graphs_in_flight = 1024;
	cfg->max_task_ms = 1000;
	cfg->uid_buffer_quota_bytes = UINT64_C(4) << 30;
	cfg->uid_max_buffers = 8192;
	cfg->max_mappings = 0;

	cfg->metrics_max_connections = 8;

	cfg->sq_entries = 4096;
	cfg->cq_entries = 8192;
}

const char *config_log_level_name(enum log_level l)
{
	switch (l) {
	case LOG_ERROR: return "error";
	case LOG_WARN: return "warn";
	case LOG_INFO: return "info";
	case LOG_DEBUG: return "debug";
	}
	return "unknown";
}

/* ---- schema --------------------------------------------------------------- */

enum key_kind {
	K_SOCKET, /* string: "" or an absolute path shorter than CONFIG_PATH_MAX */
	K_LOG_LEVEL, /* string: a log level name */
	K_NAME, /* string: [a-z0-9_]{1,CONFIG_NAME_MAX - 1} */
	K_U32, /* integer min..max, stored as uint32_t */
	K_POW2, /* power of two min..max, stored as uint32_t */
	K_BYTES, /* integer or string with a unit, min..max, stored as uint64_t */
	K_IDS, /* array of integers min..max, uint32_t[] + size_t count */
	K_GIDS, /* as K_IDS, or group names, resolved when the file is loaded */
	K_CORES, /* array of distinct integers min..max, int[] + size_t count */
	K_BOOL, /* true/false, stored as uint32_t 0/1 */
	K_PATH, /* string: "" or an absolute path shorter than CONFIG_PLUGIN_MAX */
	K_DEVSEL, /* array of device selectors (names), char[][CONFIG_NAME_MAX] + count */
	K_DEVBYTES, /* table selector = size (as K_BYTES), struct config_devval[] + count */
	K_DEVU32, /* table selector = integer min..max, struct config_devval[] + count */
	K_F64, /* number (float or integer) min..max, stored as double */
	K_USERU32, /* table user = integer min..max, struct config_devval[] + count */
	K_USERHINT, /* table user = policy hint name, struct config_devval[] + count */
	K_LISTEN, /* string: "", "host:port" (IPv4 or [IPv6]) or "unix:" + an absolute path */
};

/* Whether a key takes effect on SIGHUP (RELOAD: copied into the running
 * configuration) or only on restart (RESTART: a changed value is named in a
 * warning and left as it runs). Every entry of the schema says which. */
enum key_reload { RESTART = 0, RELOAD = 1 };

struct key_spec {
	const char *section;
	const char *key;
	enum key_kind kind;
	int64_t min, max;
	size_t offset; /* of the value (or array) in struct daemon_config */
	size_t size; /* of the value, or of one element of an array */
	size_t count_off; /* arrays and tables: of the element count */
	size_t max_len; /* arrays and tables: most elements */
	enum key_reload reload;
};

/* clang-format off */
#define OFF(f) offsetof(struct daemon_config, f)
#define FIELD_SIZE(f) sizeof(((struct daemon_config *)0)->f)
#define SCALAR(sec, k, kind, lo, hi, f, rl) \
	{ sec, k, kind, lo, hi, OFF(f), FIELD_SIZE(f), 0, 0, rl }
#define ARRAY(sec, k, kind, lo, hi, f, n, cap, rl) \
	{ sec, k, kind, lo, hi, OFF(f), FIELD_SIZE(f[0]), OFF(n), cap, rl }
/* clang-format on */

static const struct key_spec schema[] = {
	SCALAR("daemon", "socket", K_SOCKET, 0, 0, socket_path, RESTART),
	SCALAR("daemon", "log_level", K_LOG_LEVEL, 0, 0, log_level, RELOAD),
	ARRAY("daemon", "allowed_uids", K_IDS, 0, UINT32_MAX - 1, allowed_uids, n_allowed_uids,
	      CONFIG_MAX_IDS, RELOAD),
	ARRAY("daemon", "allowed_gids", K_GIDS, 0, UINT32_MAX - 1, allowed_gids, n_allowed_gids,
	      CONFIG_MAX_IDS, RELOAD),
	ARRAY("daemon", "admin_uids", K_IDS, 0, UINT32_MAX - 1, admin_uids, n_admin_uids,
	      CONFIG_MAX_IDS, RELOAD),
	ARRAY("daemon", "admin_gids", K_GIDS, 0, UINT32_MAX - 1, admin_gids, n_admin_gids,
	      CONFIG_MAX_IDS, RELOAD),
	SCALAR("daemon", "max_clients", K_U32, 1, 4096, max_clients, RELOAD),
	SCALAR("daemon", "max_clients_per_uid", K_U32, 1, 4096, max_clients_per_uid, RELOAD),
	SCALAR("daemon", "max_connections", K_U32, 16, 65536, max_connections, RELOAD),
	SCALAR("daemon", "max_connections_per_uid", K_U32, 1, 65536, max_connections_per_uid,
	       RELOAD),
	SCALAR("daemon", "state_dir", K_PATH, 0, 0, state_dir, RESTART),
	SCALAR("daemon", "drain_timeout_s", K_U32, 0, 3600, drain_timeout_s, RELOAD),

	SCALAR("engine", "policy", K_NAME, 0, 0, policy, RESTART),
	SCALAR("engine", "spin_us", K_U32, 0, 10000, spin_us, RELOAD),
	SCALAR("engine", "watchdog_ms", K_U32, 10, 60000, watchdog_ms, RESTART),

	SCALAR("policy", "dmda_alpha", K_F64, 0, 1000, dmda_alpha, RESTART),
	SCALAR("policy", "dmda_beta", K_F64, 0, 1000, dmda_beta, RESTART),
	SCALAR("policy", "plan_refine_iters", K_U32, 0, 10000, plan_refine_iters, RESTART),
	SCALAR("policy", "plan_repair", K_BOOL, 0, 1, plan_repair, RESTART),
	SCALAR("policy", "llm_tiers_by_cost", K_BOOL, 0, 1, llm_tiers_by_cost, RESTART),

	SCALAR("clients", "default_weight", K_U32, 1, 1000, default_weight, RELOAD),
	ARRAY("clients", "weights", K_USERU32, 1, 1000, client_weight, n_client_weight,
	      CONFIG_MAX_DEVSEL, RELOAD),
	ARRAY("clients", "policies", K_USERHINT, 0, 0, client_policy, n_client_policy,
	      CONFIG_MAX_DEVSEL, RELOAD),

	ARRAY("cpu", "cores", K_CORES, 0, 1023, cores, n_cores, CONFIG_MAX_CORES, RESTART),

	/* SIGHUP adds and removes devices to match (daemon/elastic.c). */
	ARRAY("devices", "include", K_DEVSEL, 0, 0, dev_include, n_dev_include, CONFIG_MAX_DEVSEL,
	      RELOAD),
	ARRAY("devices", "exclude", K_DEVSEL, 0, 0, dev_exclude, n_dev_exclude, CONFIG_MAX_DEVSEL,
	      RELOAD),
	SCALAR("devices", "pipeline_depth", K_U32, 1, 64, pipeline_depth, RESTART),
	ARRAY("devices", "mem_cap", K_DEVBYTES, 4096, INT64_C(1) << 48, mem_cap, n_mem_cap,
	      CONFIG_MAX_DEVSEL, RELOAD),
	SCALAR("devices", "fault_limit", K_U32, 1, 1000, fault_limit, RESTART),
	ARRAY("devices", "fault_inject", K_DEVU32, 0, 1000000, fault_inject, n_fault_inject,
	      CONFIG_MAX_DEVSEL, RESTART),

	SCALAR("opencl", "enabled", K_BOOL, 0, 1, opencl_enabled, RESTART),
	SCALAR("cuda", "enabled", K_BOOL, 0, 1, cuda_enabled, RESTART),
	SCALAR("cuda", "plugin", K_PATH, 0, 0, cuda_plugin, RESTART),

	SCALAR("profiler", "calibrate", K_BOOL, 0, 1, calibrate, RESTART),
	SCALAR("profiler", "persist_models", K_BOOL, 0, 1, persist_models, RESTART),
	SCALAR("profiler", "save_interval_s", K_U32, 0, 86400, save_interval_s, RESTART),

	SCALAR("limits", "buffer_quota_bytes", K_BYTES, 4096, INT64_C(1) << 48, buffer_quota_bytes,
	       RELOAD),
	SCALAR("limits", "max_buffers", K_U32, 1, 1048576, max_buffers, RELOAD),
	SCALAR("limits", "max_tasks_in_flight", K_U32, 1, 16777216, max_tasks_in_flight, RELOAD),
	SCALAR("limits", "max_tasks_per_graph", K_U32, 1, 4194304, max_tasks_per_graph, RELOAD),
	SCALAR("limits", "max_graphs_in_flight", K_U32, 1, 65536, max_graphs_in_flight, RELOAD),
	SCALAR("limits", "max_task_ms", K_U32, 0, 86400000, max_task_ms, RELOAD),
	SCALAR("limits", "uid_buffer_quota_bytes", K_BYTES, 4096, INT64_C(1) << 48,
	       uid_buffer_quota_bytes, RELOAD),
	SCALAR("limits", "uid_max_buffers", K_U32, 1, 16777216, uid_max_buffers, RELOAD),
	SCALAR("limits", "max_mappings", K_U32, 0, 16777216, max_mappings, RESTART),

	SCALAR("metrics", "listen", K_LISTEN, 0, 0, metrics_listen, RESTART),
	SCALAR("metrics", "max_connections", K_U32, 1, CONFIG_METRICS_CONNECTIONS_MAX,
	       metrics_max_connections, RELOAD),

	SCALAR("rings", "sq_entries", K_POW2, 64, 65536, sq_entries, RESTART),
	SCALAR("rings", "cq_entries", K_POW2, 64, 65536, cq_entries, RESTART),
};

#define N_KEYS (sizeof(schema) / sizeof(schema[0]))

/* The spec whose "section.key" is path, or NULL. */
static const struct key_spec *find_key(const char *path)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key_spec *ks = &schema[i];
		size_t n = strlen(ks->section);

		if (!strncmp(path, ks->section, n) && path[n] == '.' &&
		    !strcmp(path + n + 1, ks->key))
			return ks;
	}
	return NULL;
}

/* ---- reload, lookups by name ------------------------------------------------- */

static bool is_array(const struct key_spec *ks)
{
	return ks->count_off != 0;
}

static bool is_string(enum key_kind kind)
{
	return kind == K_SOCKET || kind == K_NAME || kind == K_PATH || kind == K_DEVSEL ||
	       kind == K_LISTEN;
}

static bool is_devval(enum key_kind kind)
{
	return kind == K_DEVBYTES || kind == K_DEVU32 || kind == K_USERU32 || kind == K_USERHINT;
}

/* One value (or array element) of a key: strings up to their NUL, device
 * and user tables by selector and value, the rest byte for byte. */
static bool same_element(const struct key_spec *ks, const char *a, const char *b)
{
	if (is_string(ks->kind))
		return strncmp(a, b, ks->size) == 0;
	if (is_devval(ks->kind)) {
		const struct config_devval *x = (const void *)a, *y = (const void *)b;
		return strncmp(x->sel, y->sel, sizeof(x->sel)) == 0 && x->value == y->value;
	}
	return memcmp(a, b, ks->size) == 0;
}

static bool same_value(const struct key_spec *ks, const struct daemon_config *a,
                       const struct daemon_config *b)
{
	const char *va = (const char *)a + ks->offset, *vb = (const char *)b + ks->offset;
	if (!is_array(ks))
		return same_element(ks, va, vb);
	size_t na = *(const size_t *)((const char *)a + ks->count_off);
	size_t nb = *(const size_t *)((const char *)b + ks->count_off);
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!same_element(ks, va + i * ks->size, vb + i * ks->size))
			return false;
	return true;
}

static void copy_value(const struct key_spec *ks, struct daemon_config *to,
                       const struct daemon_config *from)
{
	memcpy((char *)to + ks->offset, (const char *)from + ks->offset,
	       is_array(ks) ? ks->size * ks->max_len : ks->size);
	if (is_array(ks))
		memcpy((char *)to + ks->count_off, (const char *)from + ks->count_off,
		       sizeof(size_t));
}

size_t config_reload(struct daemon_config *cfg, const struct daemon_config *n, char *restart_only,
                     size_t len)
{
	size_t changed = 0, used = 0;

	if (restart_only && len)
		restart_only[0] = '\0';
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key_spec *ks = &schema[i];
		if (same_value(ks, cfg, n))
			continue;
		if (ks->reload == RELOAD) {
			copy_value(ks, cfg, n);
			continue;
		}
		if (restart_only && used < len) {
			int w = snprintf(restart_only + used, len - used, "%s%s.%s",
			                 changed ? ", " : "", ks->section, ks->key);
			used = w < 0 ? len : used + (size_t)w;
		}
		changed++;
	}
	return changed;
}

/* The spec of section.key if it is of one of the kinds, else NULL. */
static const struct key_spec *find_kind(const char *section, const char *key,
                                        const enum key_kind *kinds, size_t nkinds)
{
	char path[96];
	int w = snprintf(path, sizeof(path), "%s.%s", section, key);
	if (w < 0 || (size_t)w >= sizeof(path))
		return NULL;
	const struct key_spec *ks = find_key(path);
	for (size_t i = 0; ks && i < nkinds; i++)
		if (ks->kind == kinds[i])
			return ks;
	return NULL;
}

int config_bool(const struct daemon_config *cfg, const char *section, const char *key)
{
	static const enum key_kind kinds[] = { K_BOOL };
	const struct key_spec *ks = find_kind(section, key, kinds, 1);
	return ks ? *(const uint32_t *)((const char *)cfg + ks->offset) != 0 : -1;
}

const char *config_string(const struct daemon_config *cfg, const char *section, const char *key)
{
	static const enum key_kind kinds[] = { K_SOCKET, K_NAME, K_PATH, K_LISTEN };
	const struct key_spec *ks = find_kind(section, key, kinds, 4);
	return ks ? (const char *)cfg + ks->offset : NULL;
}

size_t config_key_count(void)
{
	return N_KEYS;
}

int config_key_info(size_t i, const char **section, const char **key)
{
	if (i >= N_KEYS)
		return -1;
	*section = schema[i].section;
	*key = schema[i].key;
	return schema[i].reload == RELOAD;
}

/* The section that path lies in ("daemon" for "daemon.x.y"), or NULL. */
static const char *find_section(const char *path)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		size_t n = strlen(schema[i].section);

		if (!strncmp(path, schema[i].section, n) && (path[n] == '.' || !path[n]))
			return schema[i].section;
	}
	return NULL;
}

/* What a key accepts, for error messages. */
static void describe(const struct key_spec *ks, char *buf, size_t len)
{
	switch (ks->kind) {
	case K_SOCKET:
		snprintf(buf, len, "a string: \"\" or an absolute path shorter than %d bytes",
		         CONFIG_PATH_MAX);
		break;
	case K_LOG_LEVEL:
		snprintf(buf, len, "one of \"error\", \"warn\", \"info\", \"debug\"");
		break;
	case K_NAME:
		snprintf(buf, len, "a string of 1 to %d characters a-z, 0-9, _",
		         CONFIG_NAME_MAX - 1);
		break;
	case K_U32:
		snprintf(buf, len, "an integer in %lld..%lld", (long long)ks->min,
		         (long long)ks->max);
		break;
	case K_POW2:
		snprintf(buf, len, "a power of two in %lld..%lld", (long long)ks->min,
		         (long long)ks->max);
		break;
	case K_BYTES:
		snprintf(buf, len,
		         "a size in %lld..%lld bytes: an integer, or a string such as \"512MiB\"",
		         (long long)ks->min, (long long)ks->max);
		break;
	case K_IDS:
		snprintf(buf, len, "an array of at most %zu integers in %lld..%lld", ks->max_len,
		         (long long)ks->min, (long long)ks->max);
		break;
	case K_GIDS:
		snprintf(buf, len, "an array of at most %zu group names or integers in %lld..%lld",
		         ks->max_len, (long long)ks->min, (long long)ks->max);
		break;
	case K_CORES:
		snprintf(buf, len, "an array of at most %zu distinct integers in %lld..%lld",
		         ks->max_len, (long long)ks->min, (long long)ks->max);
		break;
	case K_BOOL: snprintf(buf, len, "true or false"); break;
	case K_PATH:
		snprintf(buf, len, "a string: \"\" or an absolute path shorter than %d bytes",
		         CONFIG_PLUGIN_MAX);
		break;
	case K_DEVSEL:
		snprintf(buf, len,
		         "an array of at most %zu device names or classes (1 to %d characters "
		         "a-z, 0-9, _)",
		         ks->max_len, CONFIG_NAME_MAX - 1);
		break;
	case K_DEVBYTES:
		snprintf(buf, len,
		         "a table of at most %zu entries device = size in %lld..%lld bytes",
		         ks->max_len, (long long)ks->min, (long long)ks->max);
		break;
	case K_DEVU32:
		snprintf(buf, len, "a table of at most %zu entries device = integer in %lld..%lld",
		         ks->max_len, (long long)ks->min, (long long)ks->max);
		break;
	case K_F64:
		snprintf(buf, len, "a number in %lld..%lld", (long long)ks->min,
		         (long long)ks->max);
		break;
	case K_USERU32:
		snprintf(buf, len, "a table of at most %zu entries user = integer in %lld..%lld",
		         ks->max_len, (long long)ks->min, (long long)ks->max);
		break;
	case K_LISTEN:
		snprintf(buf, len,
		         "a string: \"\", \"host:port\" (IPv4 or [IPv6] address, port 0 to 65535) "
		         "or \"unix:\" and an absolute path shorter than %d bytes",
		         CONFIG_PATH_MAX);
		break;
	case K_USERHINT:
		snprintf(buf, len,
		         "a table of at most %zu entries user = \"eager\", \"dmda\", \"heft\", "
		         "\"peft\" or \"prio\"",
		         ks->max_len);
		break;
	}
}

/* ---- loading -------------------------------------------------------------- */

struct load_ctx {
	struct daemon_config cfg; /* the defaults, then what the document sets */
	bool failed;
	int line, col;
	char msg[CONFIG_ERR_MAX];
};

__attribute__((format(printf, 4, 5))) static int fail(struct load_ctx *ctx, int line, int col,
                                                      const char *fmt, ...)
{
	va_list ap;

	ctx->failed = true;
	ctx->line = line;
	ctx->col = col;
	va_start(ap, fmt);
	vsnprintf(ctx->msg, sizeof(ctx->msg), fmt, ap);
	va_end(ap);
	return 1;
}

/* Writes s (of n bytes) for a message: quoted, escaped, cut to 64 bytes. */
static void quote(const char *s, size_t n, char *buf, size_t len)
{
	size_t o = 0;

	if (len < 8) {
		if (len)
			buf[0] = '\0';
		return;
	}
	buf[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (o + 8 >= len || i == 64) {
			buf[o++] = '.';
			buf[o++] = '.';
			buf[o++] = '.';
			break;
		}
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
}

static int wrong_type(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it)
{
	char want[160];

	describe(ks, want, sizeof(want));
	if (it->array_index >= 0)
		return fail(ctx, it->line, it->col, "%s[%d]: expected %s, got %s", it->path,
		            it->array_index,
		            ks->kind == K_GIDS ? "a group name or an integer" : "an integer",
		            toml_shim_type_name(it->type));
	return fail(ctx, it->line, it->col, "%s: expected %s, got %s", it->path, want,
	            toml_shim_type_name(it->type));
}

static int bad_value(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it,
                     const char *problem)
{
	char want[160], val[96];

	describe(ks, want, sizeof(want));
	if (it->type == TOML_ITEM_STRING)
		quote(it->s, it->s_len, val, sizeof(val));
	else
		snprintf(val, sizeof(val), "%lld", (long long)it->i);
	if (it->array_index >= 0)
		return fail(ctx, it->line, it->col, "%s[%d]: %s %s (expected %s)", it->path,
		            it->array_index, val, problem, want);
	return fail(ctx, it->line, it->col, "%s: %s %s (expected %s)", it->path, val, problem,
	            want);
}

static bool is_name(const char *s, size_t n)
{
	if (n < 1 || n > CONFIG_NAME_MAX - 1)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

/* What is wrong with a metrics address (NULL: nothing): "" (off),
 * "unix:/path" or "host:port" with a literal IPv4 or [IPv6] address. */
static const char *listen_problem(const char *s, size_t n)
{
	if (n == 0)
		return NULL;
	if (n > 5 && !strncmp(s, "unix:", 5)) {
		if (s[5] != '/')
			return "is not unix: and an absolute path";
		return n - 5 < CONFIG_PATH_MAX ? NULL : "names too long a socket path";
	}
	const char *colon = memrchr(s, ':', n);
	if (!colon || colon == s)
		return "is not host:port";
	size_t hl = (size_t)(colon - s), pl = n - hl - 1;
	char host[64];
	unsigned char addr[16];
	int family = AF_INET;
	if (s[0] == '[') {
		if (hl < 3 || s[hl - 1] != ']')
			return "is not host:port";
		s++;
		hl -= 2;
		family = AF_INET6;
	}
	if (hl >= sizeof(host))
		return "is not host:port";
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (inet_pton(family, host, addr) != 1)
		return family == AF_INET6 ? "does not have an IPv6 address"
		                          : "does not have an IPv4 "
		                            "address";
	if (pl == 0 || pl > 5)
		return "does not have a port in 0..65535";
	unsigned port = 0;
	for (size_t i = 0; i < pl; i++) {
		if (colon[1 + i] < '0' || colon[1 + i] > '9')
			return "does not have a port in 0..65535";
		port = port * 10 + (unsigned)(colon[1 + i] - '0');
	}
	return port <= 65535 ? NULL : "does not have a port in 0..65535";
}

static int set_string(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it,
                      void *field)
{
	static const char *const levels[] = { "error", "warn", "info", "debug" };
	char buf[48];

	if (it->type != TOML_ITEM_STRING)
		return wrong_type(ctx, ks, it);
	if (memchr(it->s, '\0', it->s_len))
		return bad_value(ctx, ks, it, "contains a NUL character");

	switch (ks->kind) {
	case K_SOCKET:
		if (it->s_len && it->s[0] != '/')
			return bad_value(ctx, ks, it, "is not an absolute path");
		if (it->s_len >= CONFIG_PATH_MAX) {
			snprintf(buf, sizeof(buf), "is %zu bytes long", it->s_len);
			return bad_value(ctx, ks, it, buf);
		}
		memcpy(field, it->s, it->s_len + 1);
		return 0;
	case K_LOG_LEVEL:
		for (size_t l = 0; l < sizeof(levels) / sizeof(levels[0]); l++) {
			if (!strcmp(it->s, levels[l])) {
				*(enum log_level *)field = (enum log_level)l;
				return 0;
			}
		}
		return bad_value(ctx, ks, it, "is not a log level");
	case K_LISTEN: {
		const char *why = listen_problem(it->s, it->s_len);
		if (why)
			return bad_value(ctx, ks, it, why);
		memcpy(field, it->s, it->s_len + 1);
		return 0;
	}
	case K_NAME:
		if (!is_name(it->s, it->s_len))
			return bad_value(ctx, ks, it, "is not a valid name");
		/* engine.policy is the only name key: it must be registered. */
		if (!policy_by_name(it->s))
			return bad_value(ctx, ks, it,
			                 "is not a registered policy (see "
			                 "tandemd --list-policies)");
		memcpy(field, it->s, it->s_len + 1);
		return 0;
	default: return wrong_type(ctx, ks, it);
	}
}

static int set_integer(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it,
                       void *field)
{
	int64_t v = it->i;

	if (ks->kind == K_BYTES && it->type == TOML_ITEM_STRING) {
		uint64_t bytes;
		int rc;

		if (memchr(it->s, '\0', it->s_len))
			return bad_value(ctx, ks, it, "contains a NUL character");
		rc = size_parse(it->s, it->s_len, &bytes);
		if (rc == -1)
			return bad_value(ctx, ks, it, "is not a size");
		if (rc < 0 || bytes < (uint64_t)ks->min || bytes > (uint64_t)ks->max)
			return bad_value(ctx, ks, it, "is out of range");
		*(uint64_t *)field = bytes;
		return 0;
	}
	if (it->type != TOML_ITEM_INT)
		return wrong_type(ctx, ks, it);
	if (v < ks->min || v > ks->max)
		return bad_value(ctx, ks, it, "is out of range");
	if (ks->kind == K_POW2 && (v & (v - 1)))
		return bad_value(ctx, ks, it, "is not a power of two");
	if (ks->kind == K_BYTES)
		*(uint64_t *)field = (uint64_t)v;
	else
		*(uint32_t *)field = (uint32_t)v;
	return 0;
}

/* An array replaces the default list; its elements follow it in the walk. */
static int set_array(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it,
                     size_t *count)
{
	if (it->type != TOML_ITEM_ARRAY)
		return wrong_type(ctx, ks, it);
	if (it->array_len > ks->max_len) {
		char want[160];

		describe(ks, want, sizeof(want));
		return fail(ctx, it->line, it->col, "%s: too many elements: %zu (expected %s)",
		            it->path, it->array_len, want);
	}
	*count = 0;
	return 0;
}

/* A group name of the system's group database (getgrnam_r: /etc/group,
 * or whatever NSS is set up to ask) to its gid; -1 if there is none. */
static int64_t group_id(const char *name, size_t len)
{
	char buf[16384];
	struct group gr, *found = NULL;

	if (len == 0 || memchr(name, '\0', len))
		return -1;
	if (getgrnam_r(name, &gr, buf, sizeof(buf), &found) != 0 || !found)
		return -1;
	return (int64_t)found->gr_gid;
}

static int add_element(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it,
                       void *field, size_t *count)
{
	if (ks->kind == K_GIDS && it->type == TOML_ITEM_STRING) {
		int64_t gid = group_id(it->s, it->s_len);
		if (gid < 0)
			return bad_value(ctx, ks, it, "is not a group of this system");
		if (gid > ks->max)
			return bad_value(ctx, ks, it, "is out of range");
		if (*count >= ks->max_len)
			return bad_value(ctx, ks, it, "is one element too many");
		((uint32_t *)field)[(*count)++] = (uint32_t)gid;
		return 0;
	}
	if (it->type != TOML_ITEM_INT)
		return wrong_type(ctx, ks, it);
	if (it->i < ks->min || it->i > ks->max)
		return bad_value(ctx, ks, it, "is out of range");
	if (*count >= ks->max_len) /* the array's length was checked first */
		return bad_value(ctx, ks, it, "is one element too many");

	if (ks->kind == K_CORES) {
		int *cores = field;

		for (size_t i = 0; i < *count; i++) {
			if (cores[i] == it->i)
				return bad_value(ctx, ks, it, "is listed twice");
		}
		cores[(*count)++] = (int)it->i;
	} else {
		uint32_t *ids = field;

		ids[(*count)++] = (uint32_t)it->i;
	}
	return 0;
}

static int visit_key(struct load_ctx *ctx, const struct key_spec *ks, const struct toml_item *it)
{
	void *field = (char *)&ctx->cfg + ks->offset;
	size_t *count = (size_t *)((char *)&ctx->cfg + ks->count_off);

	switch (ks->kind) {
	case K_SOCKET:
	case K_LOG_LEVEL:
	case K_NAME:
	case K_LISTEN:
		if (it->array_index >= 0)
			return wrong_type(ctx, ks, it);
		return set_string(ctx, ks, it, field);
	case K_U32:
	case K_POW2:
	case K_BYTES:
		if (it->array_index >= 0)
			return wrong_type(ctx, ks, it);
		return set_integer(ctx, ks, it, field);
	case K_IDS:
	case K_GIDS:
	case K_CORES:
		if (it->array_index < 0)
			return set_array(ctx, ks, it, count);
		return add_element(ctx, ks, it, field, count);
	case K_BOOL:
		if (it->array_index >= 0 || it->type != TOML_ITEM_BOOL)
			return wrong_type(ctx, ks, it);
		*(uint32_t *)field = it->b ? 1 : 0;
		return 0;
	case K_PATH:
		if (it->array_index >= 0 || it->type != TOML_ITEM_STRING)
			return wrong_type(ctx, ks, it);
		if (memchr(it->s, '\0', it->s_len))
			return bad_value(ctx, ks, it, "contains a NUL character");
		if (it->s_len && it->s[0] != '/')
			return bad_value(ctx, ks, it, "is not an absolute path");
		if (it->s_len >= CONFIG_PLUGIN_MAX)
			return bad_value(ctx, ks, it, "is too long");
		memcpy(field, it->s, it->s_len + 1);
		return 0;
	case K_DEVSEL:
		if (it->array_index < 0)
			return set_array(ctx, ks, it, count);
		if (it->type != TOML_ITEM_STRING)
			return wrong_type(ctx, ks, it);
		if (!is_name(it->s, it->s_len))
			return bad_value(ctx, ks, it, "is not a device name or class");
		memcpy((char(*)[CONFIG_NAME_MAX])field + *count, it->s, it->s_len + 1);
		(*count)++;
		return 0;
	case K_DEVBYTES:
	case K_DEVU32:
	case K_USERU32:
	case K_USERHINT:
		if (it->type != TOML_ITEM_TABLE)
			return wrong_type(ctx, ks, it);
		*count = 0; /* a table replaces the default; its entries follow */
		return 0;
	case K_F64:
		if (it->array_index >= 0 ||
		    (it->type != TOML_ITEM_FLOAT && it->type != TOML_ITEM_INT))
			return wrong_type(ctx, ks, it);
		double f = it->type == TOML_ITEM_FLOAT ? it->f : (double)it->i;
		if (!(f >= (double)ks->min && f <= (double)ks->max)) {
			char want[160];
			describe(ks, want, sizeof(want));
			return fail(ctx, it->line, it->col, "%s: %g is out of range (expected %s)",
			            it->path, f, want);
		}
		*(double *)field = f;
		return 0;
	}
	return wrong_type(ctx, ks, it);
}

/* The per-device table spec that path is an entry of ("devices.mem_cap.gpu"). */
static const struct key_spec *find_devmap(const char *path)
{
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct key_spec *ks = &schema[i];
		size_t n = strlen(ks->section), k = strlen(ks->key);
		if ((ks->kind == K_DEVBYTES || ks->kind == K_DEVU32 || ks->kind == K_USERU32 ||
		     ks->kind == K_USERHINT) &&
		    !strncmp(path, ks->section, n) && path[n] == '.' &&
		    !strncmp(path + n + 1, ks->key, k) && path[n + 1 + k] == '.')
			return ks;
	}
	return NULL;
}

static int visit_devmap_entry(struct load_ctx *ctx, const struct key_spec *ks,
                              const struct toml_item *it)
{
	struct config_devval *vals = (void *)((char *)&ctx->cfg + ks->offset);
	size_t *count = (size_t *)((char *)&ctx->cfg + ks->count_off);
	struct key_spec as_value = *ks;
	uint64_t v = 0;
	int err = 0;

	bool user = ks->kind == K_USERU32 || ks->kind == K_USERHINT;
	if (it->depth != 3 || !is_name(it->key, strlen(it->key)))
		return fail(ctx, it->key_line, it->key_col, "%s: not a %s", it->path,
		            user ? "user name or uid (a-z, 0-9, _)" : "device name or class");
	if (*count >= ks->max_len)
		return fail(ctx, it->key_line, it->key_col, "%s: more than %zu entries", it->path,
		            ks->max_len);
	as_value.kind = ks->kind == K_DEVBYTES ? K_BYTES : K_U32;
	if (ks->kind == K_USERHINT) {
		int hint;
		if (it->type != TOML_ITEM_STRING)
			return wrong_type(ctx, ks, it);
		hint = memchr(it->s, '\0', it->s_len) ? -1 : policy_hint_by_name(it->s);
		if (hint <= 0)
			return bad_value(ctx, ks, it, "is not a policy hint");
		v = (uint64_t)hint;
	} else if (as_value.kind == K_BYTES) {
		err = set_integer(ctx, &as_value, it, &v);
	} else {
		uint32_t u = 0;
		err = set_integer(ctx, &as_value, it, &u);
		v = u;
	}
	if (err)
		return err;
	snprintf(vals[*count].sel, sizeof(vals[*count].sel), "%s", it->key);
	vals[*count].value = v;
	(*count)++;
	return 0;
}

/* Length of the first part of a dotted path, quotes included. */
static size_t first_part_len(const char *path)
{
	size_t i = 0;

	if (path[0] != '"')
		return strcspn(path, ".");
	for (i = 1; path[i] && path[i] != '"'; i++) {
		if (path[i] == '\\' && path[i + 1])
			i++;
	}
	return path[i] ? i + 1 : i;
}

static int visit(void *p, const struct toml_item *it)
{
	struct load_ctx *ctx = p;
	const struct key_spec *ks = find_key(it->path);
	const char *section;

	if (ks)
		return visit_key(ctx, ks, it);
	ks = find_devmap(it->path);
	if (ks)
		return visit_devmap_entry(ctx, ks, it);

	section = find_section(it->path);
	if (it->depth == 1) {
		if (!section && it->type == TOML_ITEM_TABLE)
			return fail(ctx, it->key_line, it->key_col, "unknown section [%s]",
			            it->path);
		if (!section)
			return fail(ctx, it->key_line, it->key_col,
			            "unknown top-level key %s (keys belong in a [section])",
			            it->path);
		if (it->type != TOML_ITEM_TABLE)
			return fail(ctx, it->line, it->col, "%s: expected a table [%s], got %s",
			            it->path, it->path, toml_shim_type_name(it->type));
		return 0;
	}
	if (!section)
		return fail(ctx, it->key_line, it->key_col, "unknown section [%.*s]",
		            (int)first_part_len(it->path), it->path);
	return fail(ctx, it->key_line, it->key_col, "unknown key %s in [%s]",
	            it->path + strlen(section) + 1, section);
}

static void format_error(char *err, size_t errlen, const char *name, int line, int col,
                         const char *msg)
{
	if (!err || !errlen)
		return;
	if (line > 0)
		snprintf(err, errlen, "%s:%d:%d: %s", name, line, col, msg);
	else
		snprintf(err, errlen, "%s: %s", name, msg);
}

int config_load_string(const char *text, size_t len, const char *name, struct daemon_config *cfg,
                       char *err, size_t errlen)
{
	struct load_ctx ctx;
	char msg[CONFIG_ERR_MAX];
	int line = 0, col = 0, rc;

	if (!name)
		name = "<config>";
	if (err && errlen)
		err[0] = '\0';
	if (!cfg || (!text && len)) {
		format_error(err, errlen, name, 0, 0, "invalid arguments");
		return -TDM_EINVAL;
	}

	memset(&ctx, 0, sizeof(ctx));
	config_defaults(&ctx.cfg);
	rc = toml_shim_walk(text, len, visit, &ctx, &line, &col, msg, sizeof(msg));
	if (rc == 0) {
		memcpy(cfg, &ctx.cfg, sizeof(*cfg));
		return 0;
	}
	if (ctx.failed)
		format_error(err, errlen, name, ctx.line, ctx.col, ctx.msg);
	else
		format_error(err, errlen, name, line, col, msg);
	return -TDM_ECONFIG;
}

int config_load_file(const char *path, struct daemon_config *cfg, char *err, size_t errlen)
{
	char *buf;
	size_t n = 0;
	int fd, rc;

	if (err && errlen)
		err[0] = '\0';
	if (!path || !cfg) {
		format_error(err, errlen, path ? path : "<config>", 0, 0, "invalid arguments");
		return -TDM_EINVAL;
	}

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		char ebuf[128];

		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path,
			         strerror_r(errno, ebuf, sizeof(ebuf)));
		return -TDM_ECONFIG;
	}
	/* One byte more than the cap tells a file that is too large. */
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (!buf) {
		close(fd);
		format_error(err, errlen, path, 0, 0, "out of memory");
		return -TDM_ENOMEM;
	}
	while (n <= CONFIG_FILE_MAX) {
		ssize_t r = read(fd, buf + n, CONFIG_FILE_MAX + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			char ebuf[128];

			if (err && errlen)
				snprintf(err, errlen, "%s: cannot read: %s", path,
				         strerror_r(errno, ebuf, sizeof(ebuf)));
			close(fd);
			free(buf);
			return -TDM_ECONFIG;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (n > CONFIG_FILE_MAX) {
		format_error(err, errlen, path, 0, 0, "file is larger than 1 MiB");
		free(buf);
		return -TDM_ECONFIG;
	}
	rc = config_load_string(buf, n, path, cfg, err, errlen);
	free(buf);
	return rc;
}

int config_selector_matches(const char *sel, const char *name, const char *kind)
{
	return !strcmp(sel, name) || !strcmp(sel, kind);
}

static uint64_t client_lookup(const struct config_devval *v, size_t n, uint32_t uid,
                              const char *user, uint64_t dflt)
{
	char id[16];
	snprintf(id, sizeof(id), "%u", uid);
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].sel, id) == 0 || (user && strcmp(v[i].sel, user) == 0))
			return v[i].value;
	return dflt;
}

uint32_t config_client_weight(const struct daemon_config *cfg, uint32_t uid, const char *user)
{
	return (uint32_t)client_lookup(cfg->client_weight, cfg->n_client_weight, uid, user,
	                               cfg->default_weight);
}

uint32_t config_client_policy(const struct daemon_config *cfg, uint32_t uid, const char *user)
{
	return (uint32_t)client_lookup(cfg->client_policy, cfg->n_client_policy, uid, user,
	                               TDM_POLICY_DEFAULT);
}

uint64_t config_devval_lookup(const struct config_devval *v, size_t n, const char *name,
                              const char *kind, uint64_t dflt)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].sel, name))
			return v[i].value;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].sel, kind))
			return v[i].value;
	return dflt;
}
