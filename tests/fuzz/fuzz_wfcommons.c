/* Fuzz target: arbitrary bytes as a WfCommons workflow instance (JSON).
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz: " or "fuzz:LINE:COL: " message and an empty
 * workload, or succeeds with a workload inside every bound (tasks, finite
 * runtimes and sizes within range, edges sorted, unique, no self-loops,
 * acyclic) that converts to a plan_dag with the same shape.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workload/workload.h"
#include "tandem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool in_range(double x, double max)
{
	return isfinite(x) && x >= 0 && x <= max;
}

static void check_dag(const struct workload *w)
{
	static const double speed[3] = { 1, 0.5, 3 };
	struct wl_dag d;

	if (wl_to_dag(w, 3, speed, &d))
		abort();
	if (d.g.n != w->ntasks || d.g.succ_off[0] != 0 || d.g.succ_off[w->ntasks] != w->nedges)
		abort();
	for (uint32_t v = 0; v < w->ntasks; v++) {
		for (unsigned k = 0; k < 3; k++)
			if (d.g.cost[3 * v + k] != w->tasks[v].cost / speed[k])
				abort();
		for (uint32_t e = d.g.succ_off[v]; e < d.g.succ_off[v + 1]; e++)
			if (d.g.succ[e] >= w->ntasks || d.g.succ[e] == v ||
			    d.g.edge_data[e] != w->edges[e].data)
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
	rc = wl_wfcommons_parse((const char *)data, size, "fuzz", &w, err, sizeof(err));
	if (rc) {
		if (rc != -TDM_EINVAL && rc != -TDM_ENOMEM)
			abort();
		if (w.ntasks || w.nedges || w.tasks || w.edges)
			abort();
		if (strnlen(err, sizeof(err)) == sizeof(err))
			abort();
		if (rc == -TDM_EINVAL && strncmp(err, "fuzz: ", 6) && strncmp(err, "fuzz:", 5))
			abort();
		return 0;
	}
	if (err[0] != '\0' || strcmp(w.name, "fuzz") || w.units != WL_UNITS_SECONDS)
		abort();
	if (w.ntasks < 1 || w.ntasks > WL_MAX_TASKS || w.nedges > WL_MAX_EDGES)
		abort();
	for (uint32_t v = 0; v < w.ntasks; v++) {
		const struct wl_task *t = &w.tasks[v];
		size_t n = strnlen(t->name, WL_NAME_MAX);

		if (n == 0 || n == WL_NAME_MAX)
			abort();
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)t->name[i] < 0x20 || (unsigned char)t->name[i] >= 0x7f)
				abort();
		/* data_in / data_out are sums of sizes, each <= WL_MAX_BYTES */
		if (!in_range(t->cost, WL_MAX_SECONDS) || !isfinite(t->data_in) || t->data_in < 0 ||
		    !isfinite(t->data_out) || t->data_out < 0)
			abort();
	}
	for (uint32_t e = 0; e < w.nedges; e++) {
		const struct wl_edge *x = &w.edges[e];

		if (x->src >= w.ntasks || x->dst >= w.ntasks || x->src == x->dst ||
		    !isfinite(x->data) || x->data < 0 || x->data > w.tasks[x->src].data_out ||
		    x->data > w.tasks[x->dst].data_in)
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
