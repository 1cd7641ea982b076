/* tandemd configuration: defaults, loading from TOML, validation. */
#ifndef TDM_DAEMON_CONFIG_H
#define TDM_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

#define CONFIG_MAX_IDS 64
#define CONFIG_MAX_CORES 1024
#define CONFIG_PATH_MAX 108 /* sizeof(sun_path) */
#define CONFIG_NAME_MAX 32
#define CONFIG_ERR_MAX 512

#define CONFIG_MAX_DEVSEL 32
#define CONFIG_PLUGIN_MAX 256
#define CONFIG_METRICS_CONNECTIONS_MAX 1024

/* A per-device setting: sel is a device name ("clcpu0") or class ("gpu"). */
struct config_devval {
	char sel[CONFIG_NAME_MAX];
	uint64_t value;
};

struct daemon_config {
	/* [daemon] */
	char socket_path[CONFIG_PATH_MAX]; /* "" = default for this user */
	enum log_level log_level; /* "error" | "warn" | "info" | "debug" */
	uint32_t allowed_uids[CONFIG_MAX_IDS];
	size_t n_allowed_uids; /* 0 = the daemon's own uid and root */
	uint32_t allowed_gids[CONFIG_MAX_IDS];
	size_t n_allowed_gids; /* 0 = no group grants access */
	/* Who sees every client in status and may read models, calibrate,
	 * export and record everyone's graphs (root and the daemon's uid
	 * always may); others see and record their own sessions only. */
	uint32_t admin_uids[CONFIG_MAX_IDS];
	size_t n_admin_uids;
	uint32_t admin_gids[CONFIG_MAX_IDS];
	size_t n_admin_gids;
	uint32_t max_clients;
	/* Caps for each uid other than root and the daemon's own. */
	uint32_t max_clients_per_uid;
	uint32_t max_connections; /* sockets open at once, hello or not, control included */
	uint32_t max_connections_per_uid;
	char state_dir[CONFIG_PLUGIN_MAX]; /* calibration and models; "" = default for this user */
	uint32_t drain_timeout_s; /* SIGTERM waits this long for work in flight, then cancels it */

	/* [engine] */
	char policy[CONFIG_NAME_MAX]; /* registered policy name */
	uint32_t spin_us; /* idle spin before sleeping, 0..10000 */
	uint32_t watchdog_ms; /* a policy holding tasks while all workers idle this long is replaced
	                       */

	/* [policy] */
	double dmda_alpha, dmda_beta; /* weights of predicted finish and transfer time */
	uint32_t plan_refine_iters; /* heft/peft: extra candidate orders per graph */
	uint32_t plan_repair; /* bool: re-plan when tasks drift beyond their spread */
	uint32_t llm_tiers_by_cost; /* bool: llm policy, KV tiers from the cost models too */

	/* [clients]: by user name or decimal uid */
	uint32_t default_weight; /* share of each device, 1..1000 */
	struct config_devval client_weight[CONFIG_MAX_DEVSEL];
	size_t n_client_weight;
	struct config_devval client_policy[CONFIG_MAX_DEVSEL]; /* value: enum tdm_policy_hint */
	size_t n_client_policy;

	/* [cpu] */
	int cores[CONFIG_MAX_CORES]; /* OS indexes of cores to run workers on */
	size_t n_cores; /* 0 = every core in the process's cpuset */

	/* [devices] */
	char dev_include[CONFIG_MAX_DEVSEL][CONFIG_NAME_MAX]; /* names or classes; none = all */
	size_t n_dev_include;
	char dev_exclude[CONFIG_MAX_DEVSEL][CONFIG_NAME_MAX];
	size_t n_dev_exclude;
	uint32_t pipeline_depth; /* tasks enqueued at once per accelerator, 1..64 */
	struct config_devval mem_cap[CONFIG_MAX_DEVSEL]; /* bytes tandem may use */
	size_t n_mem_cap;
	struct config_devval fault_inject[CONFIG_MAX_DEVSEL]; /* testing: launches to fail */
	uint32_t fault_limit; /* device faults after which a device leaves (GONE) */
	size_t n_fault_inject;

	/* [opencl], [cuda] */
	uint32_t opencl_enabled; /* bool */
	uint32_t cuda_enabled; /* bool */
	char cuda_plugin[CONFIG_PLUGIN_MAX]; /* "" = next to the daemon */

	/* [profiler] */
	uint32_t calibrate; /* bool: measure the devices (else generic figures) */
	uint32_t persist_models; /* bool: load and save models under state_dir */
	uint32_t save_interval_s; /* 0 = only at shutdown */

	/* [limits] (per client) */
	uint64_t buffer_quota_bytes;
	uint32_t max_buffers;
	uint32_t max_tasks_in_flight;
	uint32_t max_tasks_per_graph;
	uint32_t max_graphs_in_flight;
	uint32_t max_task_ms; /* a task's least time on the fastest device; 0 = no limit */
	/* Per uid (every client of a user together; root and the daemon's uid
	 * are not limited by these). */
	uint64_t uid_buffer_quota_bytes;
	uint32_t uid_max_buffers;
	/* Buffers and rings mapped by the daemon at once (each is one memory
	 * mapping); 0: half of vm.max_map_count. */
	uint32_t max_mappings;

	/* [metrics] */
	char metrics_listen[CONFIG_PLUGIN_MAX]; /* "" = off, "host:port", "unix:/path" */
	uint32_t metrics_max_connections;

	/* [rings] */
	uint32_t sq_entries; /* power of two, 64..65536 */
	uint32_t cq_entries; /* power of two, 64..65536 */
};

/* The embedded default configuration, as TOML text (what `tandemd
 * --print-config` prints). Loading it gives the same as config_defaults(). */
extern const char config_default_toml[];

void config_defaults(struct daemon_config *cfg);

/* Parses TOML text named `name` (used in error messages) over the defaults:
 * what cfg held before does not matter, keys the text leaves out get their
 * defaults. text need not be NUL-terminated; only ASCII is accepted.
 * On error returns -TDM_ECONFIG and writes "name:line:col: message" to err;
 * cfg is then left untouched. */
int config_load_string(const char *text, size_t len, const char *name, struct daemon_config *cfg,
                       char *err, size_t errlen);
/* Reads and parses a file (at most 1 MiB). A file that cannot be opened or
 * read, or is too large, also gives -TDM_ECONFIG, with "path: message". */
int config_load_file(const char *path, struct daemon_config *cfg, char *err, size_t errlen);

/* SIGHUP: copies into cfg every key of n that the schema marks reloadable
 * (scalars, and arrays and tables with their counts). The keys whose value
 * differs in n but that take effect only on restart are left as they are in
 * cfg and named in restart_only ("engine.policy, cpu.cores"; "" when none;
 * may be NULL), cut to len; returns how many there are. */
size_t config_reload(struct daemon_config *cfg, const struct daemon_config *n, char *restart_only,
                     size_t len);
/* A key looked up by name, for settings named after something else's name
 * (the backend registry's "<backend>.enabled", "<backend>.plugin"): a
 * boolean's 0 or 1, -1 when the schema has no such boolean key; a string
 * key's value, NULL when the schema has no such string key. */
int config_bool(const struct daemon_config *cfg, const char *section, const char *key);
const char *config_string(const struct daemon_config *cfg, const char *section, const char *key);
/* The keys of the schema, in its order, for tests and documentation: key i
 * as section and key names; 1 if it is reloadable, 0 if it changes only on
 * restart, -1 past the last (config_key_count()). */
size_t config_key_count(void);
int config_key_info(size_t i, const char **section, const char **key);

const char *config_log_level_name(enum log_level l);

/* Whether selector sel ("cpu", "clcpu", "gpu", "npu" or a device name)
 * matches a device of that name and class. */
int config_selector_matches(const char *sel, const char *name, const char *kind);
/* The value of the most specific entry matching the device (name beats
 * class), or dflt. */
/* A client's weight and policy hint, by its uid and user name (may be NULL). */
uint32_t config_client_weight(const struct daemon_config *cfg, uint32_t uid, const char *user);
uint32_t config_client_policy(const struct daemon_config *cfg, uint32_t uid, const char *user);
uint64_t config_devval_lookup(const struct config_devval *v, size_t n, const char *name,
                              const char *kind, uint64_t dflt);

#endif
