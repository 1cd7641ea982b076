/* Fuzz target: arbitrary bytes as a Standard Task Graph Set file.
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz:LINE: " message and an empty workload, or
 * succeeds with a workload inside every bound (tasks, finite costs within
 * range, edges sorted, unique, from an earlier task to a later one, with
 * no data) that converts to a plan_dag with the same shape.
 */
#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workload/workload.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *s)
{
	size_t n = strnlen(s, WL_NAME_MAX);

	if (n == WL_NAME_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
			abort();
}

static void check_dag(const struct workload *w)
{
	struct wl_dag d;

	if (wl_to_dag(w, 2, NULL, &d))
		abort();
	if (d.g.n != w->ntasks || d.g.succ_off[0] != 0 || d.g.succ_off[w->ntasks] != w->nedges)
		abort();
	for (uint32_t v = 0; v < w->ntasks; v++) {
		if (d.g.cost[2 * v] != w->tasks[v].cost || d.g.cost[2 * v + 1] != w->tasks[v].cost)
			abort();
		for (uint32_t e = d.g.succ_off[v]; e < d.g.succ_off[v + 1]; e++)
			if (d.g.succ[e] >= w->ntasks || d.g.edge_data[e] != 0)
				abort();
	}
	wl_dag_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct workload w;
	char err[WL_ERR_MAX];
	uint32_t cyc;
	int rc;

	memset(err, 'x', sizeof(err));
	rc = wl_stg_parse((const char *)data, size, "fuzz", &w, err, sizeof(err));
	if (rc) {
		if (rc != -TDM_EINVAL && rc != -TDM_ENOMEM)
			abort();
		if (w.ntasks || w.nedges || w.tasks || w.edges)
			abort();
		if (strnlen(err, sizeof(err)) == sizeof(err))
			abort();
		if (rc == -TDM_EINVAL &&
		    (strncmp(err, "fuzz:", 5) || !isdigit((unsigned char)err[5])))
			abort();
		return 0;
	}
	if (err[0] != '\0' || strcmp(w.name, "fuzz") || w.units != WL_UNITS_ABSTRACT)
		abort();
	if (w.ntasks < 1 || w.ntasks > WL_MAX_TASKS || w.nedges > WL_MAX_EDGES)
		abort();
	for (uint32_t v = 0; v < w.ntasks; v++) {
		const struct wl_task *t = &w.tasks[v];

		check_name(t->name);
		if (!isfinite(t->cost) || t->cost < 0 || t->cost > WL_STG_MAX_COST ||
		    t->cost != floor(t->cost) || t->data_in != 0 || t->data_out != 0)
			abort();
	}
	for (uint32_t e = 0; e < w.nedges; e++) {
		const struct wl_edge *x = &w.edges[e];

		if (x->src >= x->dst || x->dst >= w.ntasks || x->data != 0)
			abort();
		if (e && (x->src < x[-1].src || (x->src == x[-1].src && x->dst <= x[-1].dst)))
			abort();
	}
	if (wl_check_acyclic(&w, &cyc))
		abort();
	check_dag(&w);
	wl_free(&w);
	return 0;
}
