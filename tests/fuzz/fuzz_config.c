/* Fuzz target: arbitrary bytes as a configuration file.
 *
 * Besides not crashing or leaking, a load must either fail with
 * -TDM_ECONFIG, a "fuzz:..." message and the configuration untouched, or
 * succeed with every field within the schema's bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_pow2_in(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v >= lo && v <= hi && !(v & (v - 1));
}

static void check_valid(const struct daemon_config *c)
{
	size_t n;

	n = strnlen(c->socket_path, sizeof(c->socket_path));
	if (n == sizeof(c->socket_path) || (n && c->socket_path[0] != '/'))
		abort();
	if (c->log_level < LOG_ERROR || c->log_level > LOG_DEBUG)
		abort();
	if (c->n_allowed_uids > CONFIG_MAX_IDS || c->n_allowed_gids > CONFIG_MAX_IDS)
		abort();
	for (size_t i = 0; i < c->n_allowed_uids; i++)
		if (c->allowed_uids[i] == UINT32_MAX)
			abort();
	for (size_t i = 0; i < c->n_allowed_gids; i++)
		if (c->allowed_gids[i] == UINT32_MAX)
			abort();
	if (c->max_clients < 1 || c->max_clients > 4096)
		abort();

	n = strnlen(c->policy, sizeof(c->policy));
	if (n < 1 || n >= sizeof(c->policy) ||
	    strspn(c->policy, "abcdefghijklmnopqrstuvwxyz"
	                      "0123456789_") != n)
		abort();
	if (c->spin_us > 10000)
		abort();

	if (c->n_cores > CONFIG_MAX_CORES)
		abort();
	for (size_t i = 0; i < c->n_cores; i++) {
		if (c->cores[i] < 0 || c->cores[i] > 1023)
			abort();
		for (size_t j = 0; j < i; j++)
			if (c->cores[i] == c->cores[j])
				abort();
	}

	n = strnlen(c->state_dir, sizeof(c->state_dir));
	if (n == sizeof(c->state_dir) || (n && c->state_dir[0] != '/'))
		abort();
	if (c->calibrate > 1 || c->persist_models > 1 || c->save_interval_s > 86400)
		abort();

	if (c->buffer_quota_bytes < 4096 || c->buffer_quota_bytes > (UINT64_C(1) << 48))
		abort();
	if (c->max_buffers < 1 || c->max_buffers > 1048576)
		abort();
	if (c->max_tasks_in_flight < 1 || c->max_tasks_in_flight > 16777216)
		abort();
	if (c->max_tasks_per_graph < 1 || c->max_tasks_per_graph > 4194304)
		abort();
	if (c->max_graphs_in_flight < 1 || c->max_graphs_in_flight > 65536)
		abort();
	if (!is_pow2_in(c->sq_entries, 64, 65536) || !is_pow2_in(c->cq_entries, 64, 65536))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct daemon_config cfg, before;
	char err[CONFIG_ERR_MAX];
	int rc;

	/* a configuration that no document loads to, to see it left alone */
	memset(&cfg, 0xa5, sizeof(cfg));
	memcpy(&before, &cfg, sizeof(cfg));
	memset(err, 'x', sizeof(err));

	rc = config_load_string((const char *)data, size, "fuzz", &cfg, err, sizeof(err));
	if (rc == 0) {
		if (err[0] != '\0')
			abort();
		check_valid(&cfg);
		return 0;
	}
	if (rc != -TDM_ECONFIG)
		abort();
	if (memcmp(&cfg, &before, sizeof(cfg)))
		abort();
	if (strnlen(err, sizeof(err)) == sizeof(err) || strncmp(err, "fuzz:", 5))
		abort();
	return 0;
}
