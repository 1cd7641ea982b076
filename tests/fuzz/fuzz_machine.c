/* Fuzz target: arbitrary bytes as a machine description (docs/machines.md),
 * parsed as `tandemd --simulate` reads one.
 *
 * Besides not crashing or leaking, machine_parse must either fail with
 * -TDM_EINVAL (or -TDM_ENOMEM), a "fuzz..." message and the machine left
 * empty, or succeed with every field within its bounds. What it accepted
 * must make a calibration that calibration_from_json accepts, a cost-model
 * document, survive machine_write and parse back identical, and stay valid
 * when restricted.
 */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "sim/machine.h"
#include "profiler/calibrate.h"
#include "tandem.h"

#define ERR_MAX 512

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
	if (!ok)
		abort();
}

static bool in(double v, double lo, double hi)
{
	return isfinite(v) && v >= lo && v <= hi;
}

static bool has_model(const struct machine *m, const char *model)
{
	for (uint32_t i = 0; i < m->ndevices; i++)
		if (!strcmp(m->dev[i].model, model))
			return true;
	return false;
}

static void check_valid(const struct machine *m)
{
	bool node_used[MACHINE_MAX_NODES] = { false };

	check(strnlen(m->name, sizeof(m->name)) < sizeof(m->name));
	check(m->ndevices >= 1 && m->ndevices <= MACHINE_MAX_DEVICES);
	check(m->nnodes >= 1 && m->nnodes <= MACHINE_MAX_NODES);
	for (uint32_t i = 0; i < m->ndevices; i++) {
		const struct machine_device *d = &m->dev[i];
		size_t n = strnlen(d->name, sizeof(d->name));

		check(n >= 1 && n < 32 &&
		      strspn(d->name, "abcdefghijklmnopqrstuvwxyz0123456789_") == n);
		n = strnlen(d->model, sizeof(d->model));
		check(n >= 1 && n < sizeof(d->model));
		for (uint32_t j = 0; j < i; j++)
			check(strcmp(d->name, m->dev[j].name) != 0);
		check((unsigned)d->kind < TDM_DEV_KIND_COUNT);
		check(d->node < m->nnodes);
		check((d->kind == TDM_DEV_CPU) == (d->node == 0));
		check(d->node == 0 || !node_used[d->node]);
		check(d->node == 0 ? d->mem_bytes == 0 : d->mem_bytes > 0);
		node_used[d->node] = true;
		check(in(d->gemm_gflops, 0, 1e7) && d->gemm_gflops > 0 && d->gemm_gflops < 1e7);
		check(in(d->mem_gbps, 0, 1e5) && d->mem_gbps > 0 && d->mem_gbps < 1e5);
		check(in(d->launch_ns, 0, 1e9) && d->launch_ns < 1e9);
		check(d->socket_gbps == 0 ||
		      (d->kind == TDM_DEV_CPU && in(d->socket_gbps, d->mem_gbps, 1e5)));
		check(in(d->fp16_gflops, 0, 1e7) && d->fp16_gflops < 1e7);
		/* shares_cores_with: accelerators only, other devices' host cores */
		check(d->kind != TDM_DEV_CPU || d->shares_cores == 0);
		for (uint32_t j = 0; j < 64; j++)
			check(!(d->shares_cores >> j & 1) ||
			      (j < m->ndevices && j != i && m->dev[j].kind == TDM_DEV_CPU));
	}
	for (uint32_t k = 1; k < m->nnodes; k++)
		check(node_used[k]);
	for (uint32_t s = 0; s < m->nnodes; s++) {
		for (uint32_t d = 0; d < m->nnodes; d++) {
			const struct cal_link *l = &m->link[s][d];

			check(in(l->gbps, 0, 1e5) && l->gbps > 0 && l->gbps < 1e5);
			check(in(l->latency_ns, 0, 1e9) && l->latency_ns < 1e9);
		}
	}
	check(m->ncosts <= MACHINE_MAX_COSTS && (m->ncosts == 0 || m->costs));
	for (uint32_t i = 0; i < m->ncosts; i++) {
		const struct machine_cost *c = &m->costs[i];

		check(c->kernel > KERNEL_NOOP && c->kernel < KERNEL_COUNT);
		check(has_model(m, c->model));
		check(in(c->feat.flops, 0, 1e30) && in(c->feat.bytes, 0, 1e30) &&
		      in(c->feat.domain, 0, 1e30));
		check(in(c->ns, 1, 1e15) && in(c->spread_ns, 0, 1e15));
	}
}

static bool same_cost(const struct machine_cost *a, const struct machine_cost *b)
{
	return a->kernel == b->kernel && !strcmp(a->model, b->model) &&
	       a->feat.flops == b->feat.flops && a->feat.bytes == b->feat.bytes &&
	       a->feat.domain == b->feat.domain && a->ns == b->ns && a->spread_ns == b->spread_ns;
}

static void check_same(const struct machine *a, const struct machine *b)
{
	check(!strcmp(a->name, b->name));
	check(a->ndevices == b->ndevices && a->nnodes == b->nnodes && a->ncosts == b->ncosts);
	for (uint32_t i = 0; i < a->ndevices; i++) {
		const struct machine_device *x = &a->dev[i], *y = &b->dev[i];

		check(!strcmp(x->name, y->name) && !strcmp(x->model, y->model));
		check(x->kind == y->kind && x->node == y->node && x->mem_bytes == y->mem_bytes);
		check(x->gemm_gflops == y->gemm_gflops && x->mem_gbps == y->mem_gbps &&
		      x->launch_ns == y->launch_ns);
	}
	for (uint32_t s = 0; s < a->nnodes; s++)
		for (uint32_t d = 0; d < a->nnodes; d++)
			check(a->link[s][d].gbps == b->link[s][d].gbps &&
			      a->link[s][d].latency_ns == b->link[s][d].latency_ns &&
			      a->link[s][d].measured == b->link[s][d].measured);
	for (uint32_t i = 0; i < a->ncosts; i++) {
		bool found = false;

		for (uint32_t j = 0; j < b->ncosts && !found; j++)
			found = same_cost(&a->costs[i], &b->costs[j]);
		check(found);
	}
}

/* machine_write as a daemon on m would, then machine_parse. */
static void check_round_trip(const struct machine *m, struct calibration *cal)
{
	struct backend_device devs[MACHINE_MAX_DEVICES];
	json_t *models = machine_models_json(m);
	struct machine back;
	char *text = NULL, err[ERR_MAX];
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	check(models && f);
	memset(devs, 0, sizeof(devs));
	for (uint32_t i = 0; i < m->ndevices; i++) {
		snprintf(devs[i].name, sizeof(devs[i].name), "%s", m->dev[i].name);
		snprintf(devs[i].model, sizeof(devs[i].model), "%s", m->dev[i].model);
		devs[i].kind = m->dev[i].kind;
		devs[i].mem_bytes = m->dev[i].mem_bytes;
		devs[i].node = m->dev[i].node;
	}
	check(machine_write(f, m->name, devs, m->ndevices, cal, models) == 0);
	fclose(f);
	json_decref(models);
	check(machine_parse(text, len, "fuzz-back", &back, err, sizeof(err)) == 0);
	check_same(m, &back);
	machine_free(&back);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct machine m;
	struct calibration *cal, *back;
	char err[ERR_MAX];
	json_t *doc;
	int rc;

	memset(&m, 0xa5, sizeof(m));
	memset(err, 'x', sizeof(err));
	rc = machine_parse((const char *)data, size, "fuzz", &m, err, sizeof(err));
	if (rc) {
		check(rc == -TDM_EINVAL || rc == -TDM_ENOMEM);
		check(strnlen(err, sizeof(err)) < sizeof(err) && !strncmp(err, "fuzz", 4));
		check(m.ndevices == 0 && m.ncosts == 0 && !m.costs);
		return 0;
	}
	check(err[0] == '\0');
	check_valid(&m);

	cal = malloc(sizeof(*cal));
	back = malloc(sizeof(*back));
	check(cal && back);
	machine_calibration(&m, cal);
	doc = calibration_to_json(cal);
	check(doc && calibration_from_json(doc, back, err, sizeof(err)) == 0);
	json_decref(doc);
	check_round_trip(&m, cal);

	for (int k = 0; k < TDM_DEV_KIND_COUNT; k++) {
		uint32_t have = 0;

		for (uint32_t i = 0; i < m.ndevices; i++)
			have += m.dev[i].kind == (enum tdm_device_kind)k;
		check(machine_restrict(&m, (enum tdm_device_kind)k, have + 1, err, sizeof(err)) ==
		      -TDM_EINVAL);
		if (have &&
		    machine_restrict(&m, (enum tdm_device_kind)k, have / 2, err, sizeof(err)) == 0)
			check_valid(&m);
	}
	free(cal);
	free(back);
	machine_free(&m);
	return 0;
}
