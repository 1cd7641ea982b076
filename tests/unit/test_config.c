/* Unit tests for daemon/config.c (and common/toml_shim.cpp beneath it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"
#include "common/toml_shim.h"
#include "tandem.h"

#define NAME "t.toml"

static int load(const char *text, struct daemon_config *cfg, char *err)
{
	return config_load_string(text, strlen(text), NAME, cfg, err, CONFIG_ERR_MAX);
}

static void load_ok(const char *text, struct daemon_config *cfg)
{
	char err[CONFIG_ERR_MAX] = "";
	int rc = load(text, cfg, err);

	if (rc)
		print_error("unexpected error: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(err, "");
}

/* Loading len bytes of text fails with an error that starts with want. */
static void expect_error_len(const char *text, size_t len, const char *want)
{
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX] = "";
	char got[CONFIG_ERR_MAX];
	int rc;

	rc = config_load_string(text, len, NAME, &cfg, err, sizeof(err));
	assert_int_equal(rc, -TDM_ECONFIG);
	snprintf(got, sizeof(got), "%.*s", (int)strlen(want), err);
	if (strcmp(got, want))
		print_error("whole message: %s\n", err);
	assert_string_equal(got, want);
}

static void expect_error(const char *text, const char *want)
{
	expect_error_len(text, strlen(text), want);
}

static void assert_cfg_equal(const struct daemon_config *a, const struct daemon_config *b)
{
	assert_string_equal(a->socket_path, b->socket_path);
	assert_int_equal(a->log_level, b->log_level);
	assert_int_equal(a->n_allowed_uids, b->n_allowed_uids);
	assert_memory_equal(a->allowed_uids, b->allowed_uids, sizeof(a->allowed_uids));
	assert_int_equal(a->n_allowed_gids, b->n_allowed_gids);
	assert_memory_equal(a->allowed_gids, b->allowed_gids, sizeof(a->allowed_gids));
	assert_int_equal(a->n_admin_uids, b->n_admin_uids);
	assert_memory_equal(a->admin_uids, b->admin_uids, sizeof(a->admin_uids));
	assert_int_equal(a->n_admin_gids, b->n_admin_gids);
	assert_memory_equal(a->admin_gids, b->admin_gids, sizeof(a->admin_gids));
	assert_int_equal(a->max_clients, b->max_clients);
	assert_int_equal(a->max_clients_per_uid, b->max_clients_per_uid);
	assert_int_equal(a->max_connections, b->max_connections);
	assert_int_equal(a->max_connections_per_uid, b->max_connections_per_uid);
	assert_string_equal(a->policy, b->policy);
	assert_int_equal(a->spin_us, b->spin_us);
	assert_int_equal(a->n_cores, b->n_cores);
	assert_memory_equal(a->cores, b->cores, sizeof(a->cores));
	assert_int_equal(a->buffer_quota_bytes, b->buffer_quota_bytes);
	assert_int_equal(a->max_buffers, b->max_buffers);
	assert_int_equal(a->max_tasks_in_flight, b->max_tasks_in_flight);
	assert_int_equal(a->max_tasks_per_graph, b->max_tasks_per_graph);
	assert_int_equal(a->max_graphs_in_flight, b->max_graphs_in_flight);
	assert_int_equal(a->max_task_ms, b->max_task_ms);
	assert_int_equal(a->uid_buffer_quota_bytes, b->uid_buffer_quota_bytes);
	assert_int_equal(a->uid_max_buffers, b->uid_max_buffers);
	assert_int_equal(a->max_mappings, b->max_mappings);
	assert_int_equal(a->drain_timeout_s, b->drain_timeout_s);
	assert_string_equal(a->metrics_listen, b->metrics_listen);
	assert_int_equal(a->metrics_max_connections, b->metrics_max_connections);
	assert_int_equal(a->sq_entries, b->sq_entries);
	assert_int_equal(a->cq_entries, b->cq_entries);
	/* and nothing else: every field was compared above */
	assert_memory_equal(a, b, sizeof(*a));
}

/* ---- defaults ------------------------------------------------------------- */

static void test_defaults(void **state)
{
	struct daemon_config cfg;

	(void)state;
	memset(&cfg, 0xa5, sizeof(cfg));
	config_defaults(&cfg);
	assert_string_equal(cfg.socket_path, "");
	assert_int_equal(cfg.log_level, LOG_INFO);
	assert_int_equal(cfg.n_allowed_uids, 0);
	assert_int_equal(cfg.n_allowed_gids, 0);
	assert_int_equal(cfg.n_admin_uids, 0);
	assert_int_equal(cfg.n_admin_gids, 0);
	assert_int_equal(cfg.max_clients, 64);
	assert_int_equal(cfg.max_clients_per_uid, 16);
	assert_int_equal(cfg.max_connections, 1024);
	assert_int_equal(cfg.max_connections_per_uid, 64);
	assert_string_equal(cfg.policy, "dmda");
	assert_int_equal(cfg.spin_us, 50);
	assert_int_equal(cfg.n_cores, 0);
	assert_int_equal(cfg.buffer_quota_bytes, 1073741824);
	assert_int_equal(cfg.max_buffers, 4096);
	assert_int_equal(cfg.max_tasks_in_flight, 1048576);
	assert_int_equal(cfg.max_tasks_per_graph, 1048576);
	assert_int_equal(cfg.max_graphs_in_flight, 1024);
	assert_int_equal(cfg.max_task_ms, 1000);
	assert_int_equal(cfg.uid_buffer_quota_bytes, UINT64_C(4) << 30);
	assert_int_equal(cfg.uid_max_buffers, 8192);
	assert_int_equal(cfg.max_mappings, 0);
	assert_int_equal(cfg.drain_timeout_s, 30);
	assert_string_equal(cfg.metrics_listen, "");
	assert_int_equal(cfg.metrics_max_connections, 8);
	assert_int_equal(cfg.sq_entries, 4096);
	assert_int_equal(cfg.cq_entries, 8192);
}

static void test_default_text_equals_defaults(void **state)
{
	struct daemon_config want, got;

	(void)state;
	config_defaults(&want);
	memset(&got, 0x5a, sizeof(got));
	load_ok(config_default_toml, &got);
	assert_cfg_equal(&got, &want);
}

/* Each key is set, with a comment above it, in its section of the text. */
static void test_default_text_documents_every_key(void **state)
{
	const char *text = config_default_toml;

	(void)state;
	assert_true(config_key_count() > 0);
	for (size_t i = 0; i < config_key_count(); i++) {
		char header[64], line[64];
		const char *sec, *next, *key, *section, *name;

		assert_true(config_key_info(i, &section, &name) >= 0);
		snprintf(header, sizeof(header), "\n[%s]\n", section);
		snprintf(line, sizeof(line), "\n%s = ", name);
		sec = strstr(text, header);
		assert_non_null(sec);
		next = strstr(sec + 1, "\n[");
		key = strstr(sec, line);
		if (!key || (next && key > next))
			print_error("%s not set in [%s]\n", name, section);
		assert_non_null(key);
		assert_true(!next || key < next);
		/* the line before the key is a comment */
		assert_true(key > sec + 1);
		{
			const char *p = key - 1;

			while (p > text && p[-1] != '\n')
				p--;
			assert_int_equal(*p, '#');
		}
	}
}

/* A document that sets every key (to a value other than its default). */
static const char full_doc[] = "[daemon]\n"
                               "socket = \"/tmp/tandem-test.sock\"\n"
                               "log_level = \"debug\"\n"
                               "allowed_uids = [1000, 4294967294, 0]\n"
                               "allowed_gids = [27]\n"
                               "admin_uids = [4242]\n"
                               "admin_gids = [10, 11]\n"
                               "max_clients = 4096\n"
                               "max_clients_per_uid = 1\n"
                               "max_connections = 16\n"
                               "max_connections_per_uid = 65536\n"
                               "drain_timeout_s = 0\n"
                               "[engine]\n"
                               "policy = \"ws\"\n"
                               "spin_us = 0\n"
                               "[cpu]\n"
                               "cores = [3, 1, 1023]\n"
                               "[limits]\n"
                               "buffer_quota_bytes = 281474976710656\n"
                               "max_buffers = 1\n"
                               "max_tasks_in_flight = 16777216\n"
                               "max_tasks_per_graph = 4194304\n"
                               "max_graphs_in_flight = 65536\n"
                               "max_task_ms = 86400000\n"
                               "uid_buffer_quota_bytes = \"1TiB\"\n"
                               "uid_max_buffers = 16777216\n"
                               "max_mappings = 100\n"
                               "[metrics]\n"
                               "listen = \"127.0.0.1:9464\"\n"
                               "max_connections = 1024\n"
                               "[rings]\n"
                               "sq_entries = 64\n"
                               "cq_entries = 65536\n";

static void test_every_key_parsed(void **state)
{
	struct daemon_config cfg, def;

	(void)state;
	config_defaults(&def);
	memset(&cfg, 0, sizeof(cfg));
	load_ok(full_doc, &cfg);

	assert_string_equal(cfg.socket_path, "/tmp/tandem-test.sock");
	assert_int_equal(cfg.log_level, LOG_DEBUG);
	assert_int_equal(cfg.n_allowed_uids, 3);
	assert_int_equal(cfg.allowed_uids[0], 1000);
	assert_int_equal(cfg.allowed_uids[1], 4294967294u);
	assert_int_equal(cfg.allowed_uids[2], 0);
	assert_int_equal(cfg.n_allowed_gids, 1);
	assert_int_equal(cfg.allowed_gids[0], 27);
	assert_int_equal(cfg.n_admin_uids, 1);
	assert_int_equal(cfg.admin_uids[0], 4242);
	assert_int_equal(cfg.n_admin_gids, 2);
	assert_int_equal(cfg.admin_gids[1], 11);
	assert_int_equal(cfg.max_clients, 4096);
	assert_int_equal(cfg.max_clients_per_uid, 1);
	assert_int_equal(cfg.max_connections, 16);
	assert_int_equal(cfg.max_connections_per_uid, 65536);
	assert_int_equal(cfg.drain_timeout_s, 0);

	assert_string_equal(cfg.policy, "ws");
	assert_int_equal(cfg.spin_us, 0);

	assert_int_equal(cfg.n_cores, 3);
	assert_int_equal(cfg.cores[0], 3);
	assert_int_equal(cfg.cores[1], 1);
	assert_int_equal(cfg.cores[2], 1023);

	assert_int_equal(cfg.buffer_quota_bytes, UINT64_C(1) << 48);
	assert_int_equal(cfg.max_buffers, 1);
	assert_int_equal(cfg.max_tasks_in_flight, 16777216);
	assert_int_equal(cfg.max_tasks_per_graph, 4194304);
	assert_int_equal(cfg.max_graphs_in_flight, 65536);
	assert_int_equal(cfg.max_task_ms, 86400000);
	assert_int_equal(cfg.uid_buffer_quota_bytes, UINT64_C(1) << 40);
	assert_int_equal(cfg.uid_max_buffers, 16777216);
	assert_int_equal(cfg.max_mappings, 100);

	assert_string_equal(cfg.metrics_listen, "127.0.0.1:9464");
	assert_int_equal(cfg.metrics_max_connections, 1024);

	assert_int_equal(cfg.sq_entries, 64);
	assert_int_equal(cfg.cq_entries, 65536);

	/* every key of the list changed something */
	assert_int_not_equal(cfg.max_clients, def.max_clients);
	assert_int_not_equal(cfg.spin_us, def.spin_us);
	assert_int_not_equal(cfg.buffer_quota_bytes, def.buffer_quota_bytes);
	assert_int_not_equal(cfg.max_buffers, def.max_buffers);
	assert_int_not_equal(cfg.max_tasks_in_flight, def.max_tasks_in_flight);
	assert_int_not_equal(cfg.max_tasks_per_graph, def.max_tasks_per_graph);
	assert_int_not_equal(cfg.max_graphs_in_flight, def.max_graphs_in_flight);
	assert_int_not_equal(cfg.max_task_ms, def.max_task_ms);
	assert_int_not_equal(cfg.max_clients_per_uid, def.max_clients_per_uid);
	assert_int_not_equal(cfg.max_connections, def.max_connections);
	assert_int_not_equal(cfg.max_connections_per_uid, def.max_connections_per_uid);
	assert_int_not_equal(cfg.uid_buffer_quota_bytes, def.uid_buffer_quota_bytes);
	assert_int_not_equal(cfg.uid_max_buffers, def.uid_max_buffers);
	assert_int_not_equal(cfg.max_mappings, def.max_mappings);
	assert_int_not_equal(cfg.drain_timeout_s, def.drain_timeout_s);
	assert_int_not_equal(cfg.sq_entries, def.sq_entries);
	assert_int_not_equal(cfg.cq_entries, def.cq_entries);
	assert_int_not_equal(cfg.metrics_max_connections, def.metrics_max_connections);
}

/* ---- reload --------------------------------------------------------------- */

/* Every key of the schema is reloadable or not by an explicit decision: the
 * two lists below together name each key exactly once. A new key must be
 * added to one of them (and apply_reload's side effects looked at). */
static const char *const reloadable_keys[] = {
	"daemon.log_level",
	"daemon.allowed_uids",
	"daemon.allowed_gids",
	"daemon.admin_uids",
	"daemon.admin_gids",
	"daemon.max_clients",
	"daemon.max_clients_per_uid",
	"daemon.max_connections",
	"daemon.max_connections_per_uid",
	"daemon.drain_timeout_s",
	/* the devices in use follow them (daemon/elastic.c) */
	"devices.include",
	"devices.exclude",
	"devices.mem_cap",
	"engine.spin_us",
	"clients.default_weight",
	"clients.weights",
	"clients.policies",
	"limits.buffer_quota_bytes",
	"limits.max_buffers",
	"limits.max_tasks_in_flight",
	"limits.max_tasks_per_graph",
	"limits.max_graphs_in_flight",
	"limits.max_task_ms",
	"limits.uid_buffer_quota_bytes",
	"limits.uid_max_buffers",
	"metrics.max_connections",
};

static const char *const restart_keys[] = {
	"daemon.socket",
	"daemon.state_dir",
	"engine.policy",
	"engine.watchdog_ms",
	"policy.dmda_alpha",
	"policy.dmda_beta",
	"policy.plan_refine_iters",
	"policy.plan_repair",
	"policy.llm_tiers_by_cost",
	"cpu.cores",
	"devices.pipeline_depth",
	"devices.fault_inject",
	"devices.fault_limit",
	"opencl.enabled",
	"cuda.enabled",
	"cuda.plugin",
	"profiler.calibrate",
	"profiler.persist_models",
	"profiler.save_interval_s",
	"limits.max_mappings",
	"metrics.listen",
	"rings.sq_entries",
	"rings.cq_entries",
};

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static bool listed(const char *const *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i], name))
			return true;
	return false;
}

static void test_reloadable_keys(void **state)
{
	size_t nreload = 0, nrestart = 0;
	(void)state;
	for (size_t i = 0; i < config_key_count(); i++) {
		const char *section, *key;
		char name[64];
		int rl = config_key_info(i, &section, &key);
		snprintf(name, sizeof(name), "%s.%s", section, key);
		bool want = listed(reloadable_keys, LEN(reloadable_keys), name);
		bool restart = listed(restart_keys, LEN(restart_keys), name);
		if (want == restart || rl != (int)want)
			print_error("%s: schema says %s, the test lists it %s\n", name,
			            rl == 1 ? "reloadable" : "restart only",
			            want && restart ? "twice"
			            : want          ? "reloadable"
			            : restart       ? "restart only"
			                            : "nowhere");
		assert_true(want != restart);
		assert_int_equal(rl, want ? 1 : 0);
		nreload += want;
		nrestart += restart;
	}
	/* and no listed key is missing from the schema */
	assert_int_equal(nreload, LEN(reloadable_keys));
	assert_int_equal(nrestart, LEN(restart_keys));
	assert_int_equal(config_key_count(), LEN(reloadable_keys) + LEN(restart_keys));
	const char *s, *k;
	assert_int_equal(config_key_info(config_key_count(), &s, &k), -1);
}

/* config_reload copies the reloadable keys (arrays with their counts) and
 * names the others that changed, leaving them as they run. */
static void test_reload_copies_and_names(void **state)
{
	struct daemon_config run, next;
	char why[256];
	(void)state;

	config_defaults(&run);
	load_ok("[daemon]\nallowed_uids = [1, 2, 3]\n[clients]\nweights = { alice = 2, bob = 3 }\n",
	        &run);
	load_ok("[daemon]\n"
	        "log_level = \"debug\"\n"
	        "allowed_uids = [7, 8]\n"
	        "max_clients = 5\n"
	        "[engine]\n"
	        "policy = \"ws\"\n"
	        "spin_us = 7\n"
	        "[policy]\n"
	        "dmda_alpha = 2.5\n"
	        "[clients]\n"
	        "weights = { carol = 4 }\n"
	        "policies = { dave = \"heft\" }\n"
	        "[cpu]\n"
	        "cores = [1]\n"
	        "[devices]\n"
	        "include = [\"cpu\"]\n"
	        "[limits]\n"
	        "max_tasks_per_graph = 8\n",
	        &next);

	assert_int_equal(config_reload(&run, &next, why, sizeof(why)), 3);
	assert_string_equal(why, "engine.policy, policy.dmda_alpha, cpu.cores");
	/* reloaded */
	assert_int_equal(run.log_level, LOG_DEBUG);
	assert_int_equal(run.n_allowed_uids, 2);
	assert_int_equal(run.allowed_uids[0], 7);
	assert_int_equal(run.allowed_uids[1], 8);
	assert_int_equal(run.max_clients, 5);
	assert_int_equal(run.spin_us, 7);
	assert_int_equal(run.n_client_weight, 1);
	assert_string_equal(run.client_weight[0].sel, "carol");
	assert_int_equal(run.client_weight[0].value, 4);
	assert_int_equal(run.n_client_policy, 1);
	assert_string_equal(run.client_policy[0].sel, "dave");
	assert_int_equal(run.max_tasks_per_graph, 8);
	/* restart only: as they ran */
	assert_string_equal(run.policy, "dmda");
	assert_true(run.dmda_alpha == 1.0);
	assert_int_equal(run.n_cores, 0);
	assert_int_equal(run.n_dev_include, 1); /* reloadable: the devices follow */

	/* Again: the reloadable keys agree now, the others still differ. */
	assert_int_equal(config_reload(&run, &next, NULL, 0), 3);
	/* A short buffer: cut, still a string. */
	assert_int_equal(config_reload(&run, &next, why, 12), 3);
	assert_string_equal(why, "engine.poli");

	/* Nothing changed: nothing named. */
	struct daemon_config same = run;
	assert_int_equal(config_reload(&run, &same, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	/* Each key that changes is seen, whatever its kind. */
	struct daemon_config all;
	config_defaults(&run);
	config_defaults(&all);
	load_ok(full_doc, &all);
	config_reload(&run, &all, why, sizeof(why));
	assert_string_equal(why, "daemon.socket, engine.policy, cpu.cores, limits.max_mappings, "
	                         "metrics.listen, rings.sq_entries, rings.cq_entries");
	struct daemon_config want = all;
	/* what stays as it ran */
	config_defaults(&run);
	memcpy(want.socket_path, run.socket_path, sizeof(want.socket_path));
	memcpy(want.policy, run.policy, sizeof(want.policy));
	memcpy(want.cores, run.cores, sizeof(want.cores));
	want.n_cores = run.n_cores;
	want.max_mappings = run.max_mappings;
	memcpy(want.metrics_listen, run.metrics_listen, sizeof(want.metrics_listen));
	want.sq_entries = run.sq_entries;
	want.cq_entries = run.cq_entries;
	config_reload(&run, &all, NULL, 0);
	assert_cfg_equal(&run, &want);
}

/* Keys by name, as the backend registry asks for "<backend>.enabled" and
 * "<backend>.plugin": only keys of the schema, of the asked kind. */
static void test_lookup_by_name(void **state)
{
	struct daemon_config cfg;
	(void)state;
	config_defaults(&cfg);
	assert_int_equal(config_bool(&cfg, "cuda", "enabled"), 1);
	assert_int_equal(config_bool(&cfg, "opencl", "enabled"), 1);
	assert_int_equal(config_bool(&cfg, "cpu", "enabled"), -1); /* no such key */
	assert_int_equal(config_bool(&cfg, "cuda", "plugin"), -1); /* not a boolean */
	assert_string_equal(config_string(&cfg, "cuda", "plugin"), "");
	assert_null(config_string(&cfg, "opencl", "plugin"));
	assert_null(config_string(&cfg, "cuda", "enabled"));
	load_ok("[opencl]\nenabled = false\n[cuda]\nplugin = \"/opt/t/tandem-cuda.so\"\n", &cfg);
	assert_int_equal(config_bool(&cfg, "opencl", "enabled"), 0);
	assert_int_equal(config_bool(&cfg, "cuda", "enabled"), 1);
	assert_string_equal(config_string(&cfg, "cuda", "plugin"), "/opt/t/tandem-cuda.so");
	assert_string_equal(config_string(&cfg, "engine", "policy"), "dmda");
}

/* ---- each section --------------------------------------------------------- */

static void test_daemon_section(void **state)
{
	struct daemon_config cfg;
	char doc[256], path[CONFIG_PATH_MAX + 1];

	(void)state;
	load_ok("[daemon]\nlog_level = \"error\"\nmax_clients = 1\n", &cfg);
	assert_int_equal(cfg.log_level, LOG_ERROR);
	assert_int_equal(cfg.max_clients, 1);
	assert_string_equal(cfg.socket_path, "");
	load_ok("[daemon]\nlog_level = \"warn\"\nsocket = \"\"\n", &cfg);
	assert_int_equal(cfg.log_level, LOG_WARN);
	assert_string_equal(cfg.socket_path, "");

	/* the longest socket path that fits sun_path with its NUL */
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[CONFIG_PATH_MAX - 1] = '\0';
	snprintf(doc, sizeof(doc), "[daemon]\nsocket = \"%s\"\n", path);
	load_ok(doc, &cfg);
	assert_string_equal(cfg.socket_path, path);
	/* one byte longer */
	path[CONFIG_PATH_MAX - 1] = 'a';
	path[CONFIG_PATH_MAX] = '\0';
	snprintf(doc, sizeof(doc), "[daemon]\nsocket = \"%s\"\n", path);
	expect_error(doc, NAME ":2:10: daemon.socket: \"/aaaa");
	assert_non_null(strstr(config_default_toml, "socket"));

	expect_error("[daemon]\nsocket = \"run/x.sock\"\n",
	             NAME ":2:10: daemon.socket: \"run/x.sock\" is not an absolute path");
	expect_error("[daemon]\nsocket = \"/tmp/a\\u0000b\"\n",
	             NAME ":2:10: daemon.socket: \"/tmp/a\\x00b\" contains a NUL character");
	expect_error("[daemon]\nlog_level = \"verbose\"\n",
	             NAME ":2:13: daemon.log_level: \"verbose\" is not a log level (expected "
	                  "one of \"error\", \"warn\", \"info\", \"debug\")");
	expect_error("[daemon]\nlog_level = \"INFO\"\n", NAME ":2:13: daemon.log_level:");

	/* id lists */
	load_ok("[daemon]\nallowed_uids = []\nallowed_gids = [0, 4294967294]\n", &cfg);
	assert_int_equal(cfg.n_allowed_uids, 0);
	assert_int_equal(cfg.n_allowed_gids, 2);
	assert_int_equal(cfg.allowed_gids[1], 4294967294u);
	expect_error("[daemon]\nallowed_uids = [1, 4294967295]\n",
	             NAME ":2:20: daemon.allowed_uids[1]: 4294967295 is out of range");
	expect_error("[daemon]\nallowed_gids = [-1]\n",
	             NAME ":2:17: daemon.allowed_gids[0]: -1 is out of range");
	expect_error("[daemon]\nallowed_uids = [1, \"2\"]\n",
	             NAME ":2:20: daemon.allowed_uids[1]: expected an integer, got string");
	expect_error("[daemon]\nallowed_uids = [[1]]\n",
	             NAME ":2:17: daemon.allowed_uids[0]: expected an integer, got array");
	expect_error("[daemon]\nallowed_uids = 1000\n",
	             NAME ":2:16: daemon.allowed_uids: expected an array of at most 64 integers "
	                  "in 0..4294967294, got integer");
	expect_error("[daemon]\nmax_clients = 4097\n",
	             NAME ":2:15: daemon.max_clients: 4097 is out of range (expected an integer "
	                  "in 1..4096)");
	load_ok("[daemon]\ndrain_timeout_s = 3600\n", &cfg);
	assert_int_equal(cfg.drain_timeout_s, 3600);
	expect_error("[daemon]\ndrain_timeout_s = 3601\n",
	             NAME ":2:19: daemon.drain_timeout_s: 3601 is out of range (expected an "
	                  "integer in 0..3600)");
	expect_error("[daemon]\nmax_connections = 15\n",
	             NAME ":2:19: daemon.max_connections: 15 is out of range (expected an "
	                  "integer in 16..65536)");
	expect_error("[daemon]\nmax_clients_per_uid = 0\n",
	             NAME ":2:23: daemon.max_clients_per_uid: 0 is out of range (expected an "
	                  "integer in 1..4096)");
	expect_error("[daemon]\nadmin_uids = [-1]\n",
	             NAME ":2:15: daemon.admin_uids[0]: -1 is out of range");
	expect_error("[limits]\nuid_max_buffers = 0\n",
	             NAME ":2:19: limits.uid_max_buffers: 0 is out of range (expected an "
	                  "integer in 1..16777216)");
	expect_error("[limits]\nuid_buffer_quota_bytes = \"1KiB\"\n",
	             NAME ":2:26: limits.uid_buffer_quota_bytes: \"1KiB\" is out of range");
}

static void test_id_list_length(void **state)
{
	struct daemon_config cfg;
	char doc[1024];
	size_t o;

	(void)state;
	o = (size_t)snprintf(doc, sizeof(doc), "[daemon]\nallowed_uids = [");
	for (int i = 0; i < CONFIG_MAX_IDS; i++)
		o += (size_t)snprintf(doc + o, sizeof(doc) - o, "%s%d", i ? "," : "", i);
	snprintf(doc + o, sizeof(doc) - o, "]\n");
	load_ok(doc, &cfg);
	assert_int_equal(cfg.n_allowed_uids, CONFIG_MAX_IDS);
	assert_int_equal(cfg.allowed_uids[CONFIG_MAX_IDS - 1], CONFIG_MAX_IDS - 1);

	snprintf(doc + o, sizeof(doc) - o, ",64]\n");
	expect_error(doc, NAME ":2:16: daemon.allowed_uids: too many elements: 65 (expected an "
	                       "array of at most 64 integers in 0..4294967294)");
}

static void test_engine_section(void **state)
{
	struct daemon_config cfg;

	(void)state;
	load_ok("[engine]\npolicy = \"ws\"\nspin_us = 10000\n", &cfg);
	assert_string_equal(cfg.policy, "ws");
	assert_int_equal(cfg.spin_us, 10000);
	expect_error("[engine]\npolicy = \"a234567890123456789012345678901\"\n",
	             NAME ":2:10: engine.policy: \"a234567890123456789012345678901\" is not a "
	                  "registered policy");
	expect_error("[engine]\npolicy = \"lottery\"\n",
	             NAME ":2:10: engine.policy: \"lottery\" is not a registered policy");
	load_ok("[engine]\nwatchdog_ms = 60000\n", &cfg);
	assert_int_equal(cfg.watchdog_ms, 60000);
	expect_error("[engine]\nwatchdog_ms = 9\n",
	             NAME ":2:15: engine.watchdog_ms: 9 is out of range (expected an integer in "
	                  "10..60000)");

	expect_error("[engine]\npolicy = \"a2345678901234567890123456789012\"\n",
	             NAME ":2:10: engine.policy: \"a2345678901234567890123456789012\" is not a "
	                  "valid name");
	expect_error("[engine]\npolicy = \"\"\n", NAME ":2:10: engine.policy: \"\" is not a valid");
	expect_error("[engine]\npolicy = \"Eager\"\n", NAME ":2:10: engine.policy: \"Eager\"");
	expect_error("[engine]\npolicy = \"ea-ger\"\n", NAME ":2:10: engine.policy: \"ea-ger\"");
	expect_error("[engine]\npolicy = 1\n",
	             NAME ":2:10: engine.policy: expected a string of 1 to 31 characters a-z, "
	                  "0-9, _, got integer");
	expect_error("[engine]\nspin_us = 10001\n",
	             NAME ":2:11: engine.spin_us: 10001 is out of range (expected an integer in "
	                  "0..10000)");
	expect_error("[engine]\nspin_us = 50.0\n",
	             NAME ":2:11: engine.spin_us: expected an integer in 0..10000, got float");
	expect_error("[engine]\nspin_us = true\n", NAME ":2:11: engine.spin_us: expected an "
	                                                "integer in 0..10000, got boolean");
	expect_error("[engine]\nspin_us = 1979-05-27\n",
	             NAME ":2:11: engine.spin_us: expected an integer in 0..10000, got date/time");
}

static void test_policy_and_clients_sections(void **state)
{
	struct daemon_config cfg;

	(void)state;
	load_ok("[policy]\ndmda_alpha = 0.5\ndmda_beta = 3\nplan_refine_iters = 64\n"
	        "plan_repair = false\n[clients]\ndefault_weight = 10\n"
	        "weights = { alice = 4, 1001 = 1000 }\npolicies = { batch = \"heft\", 0 = "
	        "\"prio\" }\n",
	        &cfg);
	assert_true(cfg.dmda_alpha == 0.5 && cfg.dmda_beta == 3.0);
	assert_int_equal(cfg.plan_refine_iters, 64);
	assert_int_equal(cfg.plan_repair, 0);
	assert_int_equal(cfg.default_weight, 10);
	assert_int_equal(config_client_weight(&cfg, 5000, "alice"), 4);
	assert_int_equal(config_client_weight(&cfg, 1001, NULL), 1000);
	assert_int_equal(config_client_weight(&cfg, 7, "bob"), 10);
	assert_int_equal(config_client_policy(&cfg, 9, "batch"), TDM_POLICY_HEFT);
	assert_int_equal(config_client_policy(&cfg, 0, NULL), TDM_POLICY_PRIO);
	assert_int_equal(config_client_policy(&cfg, 9, "bob"), TDM_POLICY_DEFAULT);

	expect_error("[policy]\ndmda_alpha = -1.5\n",
	             NAME ":2:14: policy.dmda_alpha: -1.5 is out of range (expected a number in "
	                  "0..1000)");
	expect_error("[policy]\ndmda_beta = \"1\"\n",
	             NAME ":2:13: policy.dmda_beta: expected a number in 0..1000, got string");
	expect_error("[policy]\ndmda_beta = nan\n", NAME ":2:13: policy.dmda_beta: nan is out");
	expect_error("[clients]\nweights = { alice = 0 }\n",
	             NAME ":2:21: clients.weights.alice: 0 is out of range");
	expect_error("[clients]\nweights = { Alice = 2 }\n",
	             NAME ":2:13: clients.weights.Alice: not a user name or uid");
	expect_error("[clients]\npolicies = { bob = \"ws\" }\n",
	             NAME ":2:20: clients.policies.bob: \"ws\" is not a policy hint");
	expect_error("[clients]\npolicies = { bob = \"default\" }\n",
	             NAME ":2:20: clients.policies.bob: \"default\" is not a policy hint");
	expect_error("[clients]\npolicies = { bob = 3 }\n",
	             NAME ":2:20: clients.policies.bob: expected a table");
	expect_error("[clients]\ndefault_weight = 1001\n",
	             NAME ":2:18: clients.default_weight: 1001 is out of range");
}

static void test_cpu_section(void **state)
{
	struct daemon_config cfg;
	char *doc;
	size_t o = 0, cap = 16 * CONFIG_MAX_CORES;

	(void)state;
	load_ok("[cpu]\ncores = [7, 0, 5]\n", &cfg);
	assert_int_equal(cfg.n_cores, 3);
	assert_int_equal(cfg.cores[0], 7);
	assert_int_equal(cfg.cores[1], 0);
	assert_int_equal(cfg.cores[2], 5);
	load_ok("[cpu]\ncores = []\n", &cfg);
	assert_int_equal(cfg.n_cores, 0);

	expect_error("[cpu]\ncores = [0, 2, 5, 2]\n",
	             NAME ":2:19: cpu.cores[3]: 2 is listed twice");
	expect_error("[cpu]\ncores = [1024]\n", NAME ":2:10: cpu.cores[0]: 1024 is out of range");
	expect_error("[cpu]\ncores = \"0-3\"\n", NAME ":2:9: cpu.cores: expected an array");

	/* every core once: the most there may be */
	doc = malloc(cap);
	assert_non_null(doc);
	o += (size_t)snprintf(doc + o, cap - o, "[cpu]\ncores = [");
	for (int i = CONFIG_MAX_CORES - 1; i >= 0; i--)
		o += (size_t)snprintf(doc + o, cap - o, "%d,", i);
	snprintf(doc + o, cap - o, "]\n");
	load_ok(doc, &cfg);
	assert_int_equal(cfg.n_cores, CONFIG_MAX_CORES);
	assert_int_equal(cfg.cores[0], CONFIG_MAX_CORES - 1);
	assert_int_equal(cfg.cores[CONFIG_MAX_CORES - 1], 0);
	/* one more is too many (even before it is seen to be a duplicate) */
	snprintf(doc + o, cap - o, "0]\n");
	expect_error(doc, NAME ":2:9: cpu.cores: too many elements: 1025");
	free(doc);
}

static void test_limits_section(void **state)
{
	struct daemon_config cfg;

	(void)state;
	load_ok("[limits]\nbuffer_quota_bytes = 4096\nmax_buffers = 1048576\n"
	        "max_tasks_in_flight = 1\nmax_tasks_per_graph = 1\nmax_graphs_in_flight = 1\n",
	        &cfg);
	assert_int_equal(cfg.buffer_quota_bytes, 4096);
	assert_int_equal(cfg.max_buffers, 1048576);
	assert_int_equal(cfg.max_tasks_in_flight, 1);
	assert_int_equal(cfg.max_tasks_per_graph, 1);
	assert_int_equal(cfg.max_graphs_in_flight, 1);

	expect_error("[limits]\nbuffer_quota_bytes = 4095\n",
	             NAME ":2:22: limits.buffer_quota_bytes: 4095 is out of range");
	expect_error("[limits]\nbuffer_quota_bytes = 281474976710657\n",
	             NAME ":2:22: limits.buffer_quota_bytes: 281474976710657 is out of range");
	expect_error("[limits]\nmax_buffers = 0\n", NAME ":2:15: limits.max_buffers: 0 is out");
	expect_error("[limits]\nmax_buffers = 1048577\n", NAME ":2:15: limits.max_buffers:");
	expect_error("[limits]\nmax_tasks_in_flight = 16777217\n",
	             NAME ":2:23: limits.max_tasks_in_flight: 16777217 is out of range");
	expect_error("[limits]\nmax_tasks_per_graph = 4194305\n",
	             NAME ":2:23: limits.max_tasks_per_graph: 4194305 is out of range");
	expect_error("[limits]\nmax_graphs_in_flight = 65537\n",
	             NAME ":2:24: limits.max_graphs_in_flight: 65537 is out of range");
	load_ok("[limits]\nmax_task_ms = 0\n", &cfg); /* no limit */
	assert_int_equal(cfg.max_task_ms, 0);
	expect_error("[limits]\nmax_task_ms = 86400001\n",
	             NAME ":2:15: limits.max_task_ms: 86400001 is out of range");
	/* an int64 that does not fit uint32_t must not wrap into range */
	expect_error("[limits]\nmax_buffers = 4294967297\n",
	             NAME ":2:15: limits.max_buffers: 4294967297 is out of range");
}

static void test_devices_section(void **state)
{
	struct daemon_config cfg;
	(void)state;

	load_ok("[devices]\ninclude = [\"cpu\", \"clcpu0\"]\nexclude = [\"gpu\"]\n"
	        "pipeline_depth = 8\nmem_cap = { gpu = \"8GiB\", clcpu0 = 65536 }\n"
	        "fault_inject = { clcpu0 = 2 }\n[opencl]\nenabled = false\n"
	        "[cuda]\nenabled = false\nplugin = \"/opt/tandem/tandem-cuda.so\"\n",
	        &cfg);
	assert_int_equal(cfg.n_dev_include, 2);
	assert_string_equal(cfg.dev_include[1], "clcpu0");
	assert_int_equal(cfg.n_dev_exclude, 1);
	assert_int_equal(cfg.pipeline_depth, 8);
	assert_int_equal(cfg.n_mem_cap, 2);
	/* A name beats a class; an unlisted device gets the default. */
	assert_int_equal(config_devval_lookup(cfg.mem_cap, cfg.n_mem_cap, "gpu0", "gpu", 0),
	                 UINT64_C(8) << 30);
	assert_int_equal(config_devval_lookup(cfg.mem_cap, cfg.n_mem_cap, "clcpu0", "clcpu", 0),
	                 65536);
	assert_int_equal(config_devval_lookup(cfg.mem_cap, cfg.n_mem_cap, "npu0", "npu", 7), 7);
	assert_int_equal(
	        config_devval_lookup(cfg.fault_inject, cfg.n_fault_inject, "clcpu0", "clcpu", 0),
	        2);
	assert_int_equal(cfg.opencl_enabled, 0);
	assert_int_equal(cfg.cuda_enabled, 0);
	assert_string_equal(cfg.cuda_plugin, "/opt/tandem/tandem-cuda.so");
	assert_true(config_selector_matches("gpu", "cuda0", "gpu"));
	assert_false(config_selector_matches("gpu0", "cuda0", "gpu"));

	expect_error("[devices]\ninclude = [\"GPU\"]\n",
	             NAME ":2:12: devices.include[0]: \"GPU\" is not a device name");
	expect_error("[devices]\npipeline_depth = 0\n",
	             NAME ":2:18: devices.pipeline_depth: 0 is out of range");
	expect_error("[devices]\nmem_cap = { gpu = \"lots\" }\n",
	             NAME ":2:19: devices.mem_cap.gpu: \"lots\" is not a size");
	expect_error("[devices]\nmem_cap = { gpu = 100 }\n",
	             NAME ":2:19: devices.mem_cap.gpu: 100 is out of range");
	expect_error("[devices]\nmem_cap = 5\n", NAME ":2:11: devices.mem_cap: expected");
	expect_error("[devices]\nfault_inject = { \"Cuda 0\" = 1 }\n",
	             NAME ":2:18: devices.fault_inject.\"Cuda 0\": not a device name");
	expect_error("[devices]\nmem_cap = { gpu = { a = 1 } }\n", NAME ":2:");
	expect_error("[opencl]\nenabled = 1\n", NAME ":2:11: opencl.enabled: expected");
	expect_error("[cuda]\nplugin = \"lib/x.so\"\n",
	             NAME ":2:10: cuda.plugin: \"lib/x.so\" is not an absolute path");
}

static void test_profiler_section(void **state)
{
	struct daemon_config cfg;

	(void)state;
	config_defaults(&cfg);
	assert_string_equal(cfg.state_dir, "");
	assert_int_equal(cfg.calibrate, 1);
	assert_int_equal(cfg.persist_models, 1);
	assert_int_equal(cfg.save_interval_s, 60);
	load_ok("[daemon]\nstate_dir = \"/var/lib/tandem-a\"\n[profiler]\ncalibrate = false\n"
	        "persist_models = false\nsave_interval_s = 0\n",
	        &cfg);
	assert_string_equal(cfg.state_dir, "/var/lib/tandem-a");
	assert_int_equal(cfg.calibrate, 0);
	assert_int_equal(cfg.persist_models, 0);
	assert_int_equal(cfg.save_interval_s, 0);
	expect_error("[daemon]\nstate_dir = \"state\"\n",
	             NAME ":2:13: daemon.state_dir: \"state\" is not an absolute path");
	expect_error("[profiler]\nsave_interval_s = 86401\n",
	             NAME ":2:19: profiler.save_interval_s: 86401 is out of range");
	expect_error("[profiler]\ncalibrate = \"yes\"\n",
	             NAME ":2:13: profiler.calibrate: expected");
}

static void test_size_strings(void **state)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} ok[] = {
		{ "\"512MiB\"", UINT64_C(512) << 20 },
		{ "\"2GiB\"", UINT64_C(2) << 30 },
		{ "\"64KiB\"", UINT64_C(64) << 10 },
		{ "\"4KiB\"", 4096 },
		{ "\"8192\"", 8192 },
		{ "\"8192B\"", 8192 },
		{ "\"1 TiB\"", UINT64_C(1) << 40 },
		{ "\"256TiB\"", UINT64_C(1) << 48 },
	};
	static const char *const malformed[] = { "\"12XB\"",   "\"\"",      "\"MiB\"",
		                                 "\"0x1000\"", "\"-4GiB\"", "\"1.5GiB\"",
		                                 "\"4 gib\"",  "\"4GiB \"" };
	static const char *const too_big[] = { "\"2KiB\"", "\"257TiB\"", "\"99999999999999999999\"",
		                               "\"18446744073709551615KiB\"" };
	struct daemon_config cfg;
	char doc[128], want[128];

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(doc, sizeof(doc), "[limits]\nbuffer_quota_bytes = %s\n", ok[i].text);
		load_ok(doc, &cfg);
		assert_int_equal(cfg.buffer_quota_bytes, ok[i].bytes);
	}
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		snprintf(doc, sizeof(doc), "[limits]\nbuffer_quota_bytes = %s\n", malformed[i]);
		snprintf(want, sizeof(want),
		         NAME ":2:22: limits.buffer_quota_bytes: %s is not a size", malformed[i]);
		expect_error(doc, want);
	}
	for (size_t i = 0; i < sizeof(too_big) / sizeof(too_big[0]); i++) {
		snprintf(doc, sizeof(doc), "[limits]\nbuffer_quota_bytes = %s\n", too_big[i]);
		snprintf(want, sizeof(want),
		         NAME ":2:22: limits.buffer_quota_bytes: %s is out of range", too_big[i]);
		expect_error(doc, want);
	}
	/* only this key takes units */
	expect_error("[limits]\nmax_buffers = \"4KiB\"\n",
	             NAME ":2:15: limits.max_buffers: expected an integer in 1..1048576, got "
	                  "string");
}

static void test_rings_section(void **state)
{
	struct daemon_config cfg;

	(void)state;
	load_ok("[rings]\nsq_entries = 65536\ncq_entries = 64\n", &cfg);
	assert_int_equal(cfg.sq_entries, 65536);
	assert_int_equal(cfg.cq_entries, 64);

	expect_error("[rings]\nsq_entries = 100\n",
	             NAME ":2:14: rings.sq_entries: 100 is not a power of two (expected a power "
	                  "of two in 64..65536)");
	expect_error("[rings]\ncq_entries = 4095\n",
	             NAME ":2:14: rings.cq_entries: 4095 is not a power of two");
	expect_error("[rings]\nsq_entries = 32\n", NAME ":2:14: rings.sq_entries: 32 is out of");
	expect_error("[rings]\ncq_entries = 131072\n",
	             NAME ":2:14: rings.cq_entries: 131072 is out of range");
	expect_error("[rings]\ncq_entries = 0\n", NAME ":2:14: rings.cq_entries: 0 is out of");
}

/* [metrics]: listen is off (""), host:port with a literal IPv4 or [IPv6]
 * address and a port, or unix: and an absolute path; anything else is
 * refused with what is wrong. */
static void test_metrics_section(void **state)
{
	struct daemon_config cfg;
	static const char *const good[] = {
		"",           "127.0.0.1:9464", "0.0.0.0:0",
		"[::1]:9464", "[::]:65535",     "unix:/run/tandem/m.sock",
	};
	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char doc[256];
		snprintf(doc, sizeof(doc), "[metrics]\nlisten = \"%s\"\n", good[i]);
		load_ok(doc, &cfg);
		assert_string_equal(cfg.metrics_listen, good[i]);
	}
	load_ok("[metrics]\nmax_connections = 1\n", &cfg);
	assert_int_equal(cfg.metrics_max_connections, 1);

	expect_error("[metrics]\nlisten = \"9464\"\n",
	             NAME ":2:10: metrics.listen: \"9464\" is not host:port (expected a string: "
	                  "\"\", \"host:port\"");
	expect_error("[metrics]\nlisten = \":9464\"\n",
	             NAME ":2:10: metrics.listen: \":9464\" is not host:port");
	expect_error("[metrics]\nlisten = \"localhost:9464\"\n", NAME
	             ":2:10: metrics.listen: \"localhost:9464\" does not have an IPv4 address");
	expect_error("[metrics]\nlisten = \"127.0.0.1:65536\"\n",
	             NAME ":2:10: metrics.listen: \"127.0.0.1:65536\" does not have a port");
	expect_error("[metrics]\nlisten = \"127.0.0.1:\"\n",
	             NAME ":2:10: metrics.listen: \"127.0.0.1:\" does not have a port");
	expect_error("[metrics]\nlisten = \"127.0.0.1:94a\"\n",
	             NAME ":2:10: metrics.listen: \"127.0.0.1:94a\" does not have a port");
	expect_error("[metrics]\nlisten = \"::1:9464\"\n",
	             NAME ":2:10: metrics.listen: \"::1:9464\" does not have an IPv4 address");
	expect_error("[metrics]\nlisten = \"[::1:9464\"\n",
	             NAME ":2:10: metrics.listen: \"[::1:9464\" is not host:port");
	expect_error("[metrics]\nlisten = \"[1.2.3.4]:9464\"\n", NAME
	             ":2:10: metrics.listen: \"[1.2.3.4]:9464\" does not have an IPv6 address");
	expect_error("[metrics]\nlisten = \"unix:run/m.sock\"\n",
	             NAME ":2:10: metrics.listen: \"unix:run/m.sock\" is not unix: and an absolute "
	                  "path");
	expect_error("[metrics]\nlisten = 9464\n",
	             NAME ":2:10: metrics.listen: expected a string: \"\", \"host:port\"");
	/* the longest socket path that fits sun_path with its NUL */
	char path[CONFIG_PATH_MAX + 1], doc[CONFIG_PATH_MAX + 64];
	memset(path, 'a', sizeof(path));
	path[0] = '/';
	path[CONFIG_PATH_MAX - 1] = '\0';
	snprintf(doc, sizeof(doc), "[metrics]\nlisten = \"unix:%s\"\n", path);
	load_ok(doc, &cfg);
	path[CONFIG_PATH_MAX - 1] = 'a';
	path[CONFIG_PATH_MAX] = '\0';
	snprintf(doc, sizeof(doc), "[metrics]\nlisten = \"unix:%s\"\n", path);
	expect_error(doc, NAME ":2:10: metrics.listen: \"unix:/aaaa");
	expect_error("[metrics]\nmax_connections = 0\n",
	             NAME ":2:19: metrics.max_connections: 0 is out of range");
	expect_error("[metrics]\nmax_connections = 1025\n",
	             NAME ":2:19: metrics.max_connections: 1025 is out of range");
}

/* ---- errors --------------------------------------------------------------- */

static void test_unknown_key(void **state)
{
	(void)state;
	expect_error("[daemon]\nmax_clients = 4\nmax_client = 4\n",
	             NAME ":3:1: unknown key max_client in [daemon]");
	expect_error("[engine]\n  policy = \"eager\"\n  polcy = \"eager\"\n",
	             NAME ":3:3: unknown key polcy in [engine]");
	expect_error("[daemon.extra]\n", NAME ":1:9: unknown key extra in [daemon]");
	expect_error("[daemon]\nx.y = 1\n", NAME ":2:1: unknown key x in [daemon]");
	/* a key with a dot in it is not the dotted key */
	expect_error("[daemon]\n\"max_clients\" = 4\n\"max.clients\" = 4\n",
	             NAME ":3:1: unknown key \"max.clients\" in [daemon]");
	expect_error("spin_us = 5\n", NAME ":1:1: unknown top-level key spin_us");
	expect_error("\"engine.spin_us\" = 5\n",
	             NAME ":1:1: unknown top-level key \"engine.spin_us\"");
	expect_error("daemon = 1\n", NAME ":1:10: daemon: expected a table [daemon], got integer");
	expect_error("[[daemon]]\n", NAME ":1:1: daemon: expected a table [daemon], got array");
}

static void test_unknown_section(void **state)
{
	(void)state;
	expect_error("[engine]\npolicy = \"ws\"\n[bogus]\nk = 1\n",
	             NAME ":3:2: unknown section [bogus]");
	expect_error("[engine]\n[Daemon]\n", NAME ":2:2: unknown section [Daemon]");
	expect_error("[engine]\n[bogus.sub]\n", NAME ":2:2: unknown section [bogus]");
	expect_error("[\"a.b\".c]\n", NAME ":1:2: unknown section [\"a.b\"]");
}

static void test_first_error_in_source_order(void **state)
{
	(void)state;
	/* keys are stored sorted; the error must still be the first one */
	expect_error("[rings]\nsq_entries = 3\n[daemon]\nallowed_uids = [-1]\n",
	             NAME ":2:14: rings.sq_entries:");
	expect_error("[limits]\nzzz = 1\naaa = 1\n", NAME ":2:1: unknown key zzz in [limits]");
}

static void test_inline_and_dotted_forms(void **state)
{
	struct daemon_config cfg;

	(void)state;
	load_ok("engine = { policy = \"ws\", spin_us = 7 }\nrings.sq_entries = 128\n", &cfg);
	assert_string_equal(cfg.policy, "ws");
	assert_int_equal(cfg.spin_us, 7);
	assert_int_equal(cfg.sq_entries, 128);
	load_ok("[daemon]\n'max_clients' = 3 # comment\n", &cfg);
	assert_int_equal(cfg.max_clients, 3);
}

static void test_non_ascii(void **state)
{
	(void)state;
	expect_error("[daemon]\nsocket = \"/tmp/\xc3\xa9\"\n",
	             NAME ":2:16: non-ASCII byte 0xc3 (only ASCII is accepted)");
	/* also in a comment, and a UTF-8 byte order mark */
	expect_error("[daemon]\n# caf\xc3\xa9\n", NAME ":2:6: non-ASCII byte 0xc3");
	expect_error("\xef\xbb\xbf[daemon]\n", NAME ":1:1: non-ASCII byte 0xef");
	/* an escape is ASCII text, but the name it makes is not valid */
	expect_error("[engine]\npolicy = \"caf\\u00e9\"\n",
	             NAME ":2:10: engine.policy: \"caf\\xc3\\xa9\" is not a valid name");
}

static void test_nul_byte(void **state)
{
	static const char doc[] = "[daemon]\nmax_clients = 4\0\n";

	(void)state;
	expect_error_len(doc, sizeof(doc) - 1, NAME ":2:16: NUL byte");
	/* a NUL at the very start */
	expect_error_len("\0", 1, NAME ":1:1: NUL byte");
}

static void test_syntax_error(void **state)
{
	(void)state;
	expect_error("[daemon]\nmax_clients = = 4\n", NAME ":2:15: ");
	expect_error("[daemon\n", NAME ":1:8: ");
	expect_error("[daemon]\nsocket = \"/tmp/x\n", NAME ":2:");
	expect_error("[daemon]\nmax_clients = 4\nmax_clients = 5\n", NAME ":3:");
	expect_error("[daemon]\n[daemon]\n", NAME ":2:");
	expect_error("[daemon]\nmax_clients = 99999999999999999999\n", NAME ":2:");
}

static void test_nesting_limits(void **state)
{
	char doc[512];
	size_t o = 0;

	(void)state;
	/* 32 parts are allowed (and then fail the schema) */
	o += (size_t)snprintf(doc + o, sizeof(doc) - o, "[daemon]\nk");
	for (int i = 1; i < TOML_SHIM_MAX_KEY_PARTS; i++)
		o += (size_t)snprintf(doc + o, sizeof(doc) - o, ".k");
	snprintf(doc + o, sizeof(doc) - o, " = 1\n");
	expect_error(doc, NAME ":2:1: unknown key k in [daemon]");
	snprintf(doc + o, sizeof(doc) - o, ".k = 1\n");
	expect_error(doc, NAME ":2:64: dotted key with more than 32 parts");
	expect_error("[a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g]\n",
	             NAME ":1:65: dotted key with more than 32 parts");
	/* dots in strings, comments and floats do not count */
	expect_error("[daemon] # ................................................\n"
	             "socket = \"/....................................................\"\n"
	             "x = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 1.5, 2.5, 3.5, 4.5, 5.5,"
	             " 6.5, 7.5, 8.5, 9.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 1.5, 2.5,"
	             " 3.5, 4.5, 5.5, 6.5, 7.5]\n",
	             NAME ":3:1: unknown key x in [daemon]");
	expect_error("x = {a={b={c={d={e={f={g={h={}}}}}}}}}\n",
	             NAME ":1:29: inline tables nested more than 8 deep");
}

/* ---- what a failed or successful load does to cfg ------------------------- */

static void test_failed_load_leaves_cfg(void **state)
{
	struct daemon_config cfg, saved;
	char err[CONFIG_ERR_MAX];

	(void)state;
	load_ok(full_doc, &cfg);
	memcpy(&saved, &cfg, sizeof(cfg));
	/* valid keys come before the error, and would change cfg */
	assert_int_equal(load("[daemon]\nmax_clients = 7\nallowed_uids = [5]\n[cpu]\n"
	                      "cores = [1, 2, 1]\n",
	                      &cfg, err),
	                 -TDM_ECONFIG);
	assert_string_equal(err, NAME ":5:16: cpu.cores[2]: 1 is listed twice (expected an array "
	                              "of at most 1024 distinct integers in 0..1023)");
	assert_memory_equal(&cfg, &saved, sizeof(cfg));
	assert_int_equal(load("[engine]\npolicy = \"x\"\n[", &cfg, err), -TDM_ECONFIG);
	assert_memory_equal(&cfg, &saved, sizeof(cfg));
	assert_int_equal(load("[engine]\npolicy = \"\xff\"", &cfg, err), -TDM_ECONFIG);
	assert_memory_equal(&cfg, &saved, sizeof(cfg));
}

static void test_load_starts_from_defaults(void **state)
{
	struct daemon_config cfg, def;

	(void)state;
	config_defaults(&def);
	load_ok(full_doc, &cfg);
	load_ok("", &cfg);
	assert_cfg_equal(&cfg, &def);
	load_ok(full_doc, &cfg);
	assert_int_equal(config_load_string(NULL, 0, NULL, &cfg, NULL, 0), 0);
	assert_cfg_equal(&cfg, &def);
	load_ok(full_doc, &cfg);
	load_ok("# only a comment\n\n[engine]\n", &cfg);
	assert_cfg_equal(&cfg, &def);
}

static void test_error_buffer(void **state)
{
	struct daemon_config cfg;
	char err[12];

	(void)state;
	memset(err, 'x', sizeof(err));
	assert_int_equal(config_load_string("[x]", 3, NAME, &cfg, err, sizeof(err)), -TDM_ECONFIG);
	assert_string_equal(err, "t.toml:1:2:");
	assert_int_equal(config_load_string("[x]", 3, NAME, &cfg, NULL, 0), -TDM_ECONFIG);
	assert_int_equal(config_load_string("[x]", 3, NULL, &cfg, err, sizeof(err)), -TDM_ECONFIG);
	assert_int_equal(err[sizeof(err) - 1], '\0');
	/* not NUL-terminated text: only len bytes are read */
	assert_int_equal(config_load_string("[engine]\nspin_us = 77", 20, NAME, &cfg, NULL, 0), 0);
	assert_int_equal(cfg.spin_us, 7);
}

/* ---- files ---------------------------------------------------------------- */

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/tandem-test-config-XXXXXX";
	char err[CONFIG_ERR_MAX], want[CONFIG_ERR_MAX + 64];
	struct daemon_config cfg, saved;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);

	write_file(path, full_doc, strlen(full_doc));
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.cq_entries, 65536);
	assert_string_equal(cfg.policy, "ws");

	memcpy(&saved, &cfg, sizeof(cfg));
	write_file(path, "[engine]\nspin_us = -1\n", 22);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), -TDM_ECONFIG);
	snprintf(want, sizeof(want), "%s:2:11: engine.spin_us: -1 is out of range", path);
	assert_int_equal(strncmp(err, want, strlen(want)), 0);
	assert_memory_equal(&cfg, &saved, sizeof(cfg));

	unlink(path);
}

static void test_load_file_missing(void **state)
{
	struct daemon_config cfg, saved;
	char err[CONFIG_ERR_MAX];

	(void)state;
	config_defaults(&cfg);
	cfg.spin_us = 1234;
	memcpy(&saved, &cfg, sizeof(cfg));
	assert_int_equal(
	        config_load_file("/nonexistent-tandem/tandemd.toml", &cfg, err, sizeof(err)),
	        -TDM_ECONFIG);
	assert_string_equal(err, "/nonexistent-tandem/tandemd.toml: cannot open: No such file or "
	                         "directory");
	assert_memory_equal(&cfg, &saved, sizeof(cfg));

	assert_int_equal(config_load_file("/", &cfg, err, sizeof(err)), -TDM_ECONFIG);
	assert_string_equal(err, "/: cannot read: Is a directory");
}

static void test_load_file_size_cap(void **state)
{
	char path[] = "/tmp/tandem-test-config-XXXXXX";
	const size_t cap = 1u << 20;
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX], want[CONFIG_ERR_MAX];
	char *big;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);

	/* exactly 1 MiB of comment lines, then the key */
	big = malloc(cap + 1);
	assert_non_null(big);
	memset(big, '#', cap);
	for (size_t i = 63; i < cap; i += 64)
		big[i] = '\n';
	memcpy(big + cap - 24, "\n[engine]\nspin_us = 42\n", 23);
	big[cap - 1] = '\n';
	write_file(path, big, cap);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.spin_us, 42);

	/* one byte more */
	big[cap] = '\n';
	write_file(path, big, cap + 1);
	assert_int_equal(config_load_file(path, &cfg, err, sizeof(err)), -TDM_ECONFIG);
	snprintf(want, sizeof(want), "%s: file is larger than 1 MiB", path);
	assert_string_equal(err, want);

	free(big);
	unlink(path);
}

/* The example for operators loads cleanly (the tests run from the source
 * tree's root; from elsewhere, TDM_SOURCE_DIR names it). */
static void test_example_file(void **state)
{
	const char *dir = getenv("TDM_SOURCE_DIR");
	char path[4096], err[CONFIG_ERR_MAX] = "";
	struct daemon_config cfg, def;
	int rc;

	(void)state;
	snprintf(path, sizeof(path), "%s/examples/tandemd.toml", dir ? dir : ".");
	if (access(path, R_OK)) {
		print_message("%s not found: run from the source tree or set TDM_SOURCE_DIR\n",
		              path);
		skip();
	}
	rc = config_load_file(path, &cfg, err, sizeof(err));
	if (rc)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	config_defaults(&def);
	assert_string_equal(cfg.socket_path, "/run/tandem/tandemd.sock");
	assert_int_equal(cfg.buffer_quota_bytes, UINT64_C(4) << 30);
	assert_int_equal(cfg.n_cores, 4);
	assert_int_equal(cfg.sq_entries, def.sq_entries);
}

static void test_log_level_name(void **state)
{
	(void)state;
	assert_string_equal(config_log_level_name(LOG_ERROR), "error");
	assert_string_equal(config_log_level_name(LOG_WARN), "warn");
	assert_string_equal(config_log_level_name(LOG_INFO), "info");
	assert_string_equal(config_log_level_name(LOG_DEBUG), "debug");
	assert_string_equal(config_log_level_name((enum log_level)42), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_default_text_equals_defaults),
		cmocka_unit_test(test_default_text_documents_every_key),
		cmocka_unit_test(test_every_key_parsed),
		cmocka_unit_test(test_reloadable_keys),
		cmocka_unit_test(test_reload_copies_and_names),
		cmocka_unit_test(test_lookup_by_name),
		cmocka_unit_test(test_daemon_section),
		cmocka_unit_test(test_id_list_length),
		cmocka_unit_test(test_engine_section),
		cmocka_unit_test(test_cpu_section),
		cmocka_unit_test(test_limits_section),
		cmocka_unit_test(test_size_strings),
		cmocka_unit_test(test_devices_section),
		cmocka_unit_test(test_profiler_section),
		cmocka_unit_test(test_rings_section),
		cmocka_unit_test(test_metrics_section),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_unknown_section),
		cmocka_unit_test(test_first_error_in_source_order),
		cmocka_unit_test(test_inline_and_dotted_forms),
		cmocka_unit_test(test_non_ascii),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_nesting_limits),
		cmocka_unit_test(test_failed_load_leaves_cfg),
		cmocka_unit_test(test_load_starts_from_defaults),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_load_file_missing),
		cmocka_unit_test(test_load_file_size_cap),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_policy_and_clients_sections),
		cmocka_unit_test(test_log_level_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
