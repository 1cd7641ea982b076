/* Devices join, drain and leave while clients run (issue 18), CI-sized:
 * one daemon on the CPU cores and PoCL's OpenCL device (when present), two
 * Cholesky clients (threads) and two llm_layer clients (processes, MoE and
 * dense) with every graph checked against a host reference, while ~60
 * random device changes (add, drain, resume, remove of CPU workers and
 * clcpu0) fire at short random pauses, and clcpu0's first launches fail
 * (fault injection). Asserted: no graph lost or left with a task not done,
 * no wrong result, changes applied, one id per device however often it
 * came back, and the daemon and its clients never
 * restarted (same daemon pid, one session per client). The 1000-event run
 * and the timings are tests/bench/bench_elastic.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "support.h"
#include "support_elastic.h"

#define EVENTS 60

static struct tdmt_daemon daemon_;

static int teardown(void **state)
{
	(void)state;
	return tdmt_test_end(&daemon_, 10000);
}

/* The names of the devices the daemon has or could add: every CPU worker
 * and clcpu0 when the status shows it. */
static int device_names(char names[][16], int max, bool *have_cl)
{
	json_t *doc = tdmt_status_doc(daemon_.sock);
	int n = 0;
	assert_non_null(doc);
	*have_cl = false;
	const char *lists[] = { "devices", "available" };
	for (size_t l = 0; l < 2; l++) {
		size_t i;
		json_t *d;
		json_array_foreach(json_object_get(doc, lists[l]), i, d)
		{
			const char *name = json_string_value(json_object_get(d, "name"));
			if (!name || n >= max)
				continue;
			bool seen = false;
			for (int k = 0; k < n; k++)
				seen |= !strcmp(names[k], name);
			if (seen || (strncmp(name, "cpu", 3) && strcmp(name, "clcpu0")))
				continue;
			*have_cl |= !strcmp(name, "clcpu0");
			snprintf(names[n++], 16, "%s", name);
		}
	}
	json_decref(doc);
	return n;
}

static void test_random_changes_under_load(void **state)
{
	(void)state;
	/* eager hands tasks to whichever device asks, so every device added
	 * takes work at once and buffers move between all of them. */
	assert_int_equal(tdmt_daemon_start(&daemon_, "[engine]\npolicy = \"eager\"\n"
	                                             "[devices]\nfault_inject = { clcpu0 = 2 }\n"),
	                 0);
	pid_t pid = daemon_.pid;
	char names[16][16];
	const char *list[16];
	bool have_cl;
	int n = device_names(names, 16, &have_cl);
	for (int i = 0; i < n; i++)
		list[i] = names[i];
	if (!have_cl)
		printf("# no OpenCL device (clcpu0): only CPU workers change\n");
	if (n < 2) {
		printf("# skipped: one CPU core and no OpenCL device: nothing can change\n");
		tdmt_test_ok();
		skip();
	}

	/* A new sequence of changes each run, printed; TDMT_ELASTIC_SEED
	 * replays one. */
	const char *env = getenv("TDMT_ELASTIC_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : tdmt_now_ns();
	printf("# changes from seed %llu (TDMT_ELASTIC_SEED)\n", (unsigned long long)seed);

	static struct tdmt_elastic e;
	memset(&e, 0, sizeof(e));
	e.sock = daemon_.sock;
	e.chol_clients = 2;
	e.chol_tiles = 4;
	e.chol_nb = 32;
	e.llm_clients = 2;
	e.tmpdir = daemon_.dir;
	e.graph_timeout_ms = 30000;
	assert_int_equal(tdmt_elastic_start(&e), 0);
	assert_int_equal(tdmt_elastic_warm(&e, 100, 20000), 0);

	struct tdmt_el_events ev = { .sock = daemon_.sock,
		                     .names = list,
		                     .nnames = n,
		                     .count = EVENTS,
		                     .pause_min_ms = 2,
		                     .pause_max_ms = 30,
		                     .seed = seed };
	int fired = tdmt_elastic_fire_events(&ev);
	int stopped = tdmt_elastic_stop(&e, 20000);

	printf("# %u events sent, %u applied (add %u, drain %u, resume %u, remove %u), %u "
	       "refused%s%s\n",
	       ev.sent, ev.applied, ev.by_op[TDM_DEV_ADD], ev.by_op[TDM_DEV_DRAIN],
	       ev.by_op[TDM_DEV_RESUME], ev.by_op[TDM_DEV_REMOVE], ev.refused,
	       ev.refused ? ", last: " : "", ev.last_error);
	printf("# graphs ok %llu, lost %llu (tasks %llu), wrong %llu; cholesky tasks done %llu\n",
	       (unsigned long long)e.n.graphs_ok, (unsigned long long)e.n.graphs_lost,
	       (unsigned long long)e.n.tasks_lost, (unsigned long long)e.n.graphs_wrong,
	       (unsigned long long)e.n.tasks_done);
	json_t *doc = tdmt_status_doc(daemon_.sock);
	assert_non_null(doc);
	size_t i;
	json_t *dv;
	json_int_t faults = 0;
	json_array_foreach(json_object_get(doc, "devices"), i, dv) faults +=
	        json_integer_value(json_object_get(dv, "faults"));
	printf("# devices changed:");
	for (int k = 0; k < n; k++)
		printf(" %s", list[k]);
	char split[256];
	tdmt_tasks_per_name(doc, split, sizeof(split));
	size_t ids = json_array_size(json_object_get(doc, "devices"));
	printf("; ids given %zu; device faults hit %lld; tasks run: %s\n", ids, (long long)faults,
	       split);
	json_decref(doc);
	/* A device that comes back takes its old id: one id per device. */
	assert_true(ids <= (size_t)n);
	assert_int_equal(fired, 0);
	assert_int_equal(stopped, 0);
	assert_int_equal(e.n.graphs_lost, 0);
	assert_int_equal(e.n.tasks_lost, 0);
	assert_int_equal(e.n.graphs_wrong, 0);
	assert_true(e.n.graphs_ok > 0);
	assert_int_equal(ev.no_reply, 0);
	/* Most changes chosen are valid for the state the status showed. */
	assert_true(ev.applied >= EVENTS / 2);
	/* Never restarted: the same daemon, one session per client. */
	assert_true(tdmt_daemon_alive(&daemon_));
	assert_int_equal(daemon_.pid, pid);
	int64_t sessions;
	assert_int_equal(tdmt_counter(daemon_.sock, "sessions_total", &sessions), 0);
	assert_int_equal(sessions, e.chol_clients + e.llm_clients);
	tdmt_test_ok();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_random_changes_under_load, tdmt_test_setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
