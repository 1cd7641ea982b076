/* Fuzz target: submission-ring entries through intake.
 *
 * The input is a list of records: one control byte, then one raw
 * struct tdm_sqe. Control bits steer some fields towards valid values (a
 * live handle, a known kernel, an in-range offset) so that the fuzzer also
 * reaches the code behind the first checks. Accepted graphs are executed
 * on the CPU kernels directly, so an argument that escaped validation shows
 * up as an out-of-bounds access under ASan. */
#include <stdint.h>
#include <string.h>

#include "tests/harness/intake_harness.h"

#define REC_BYTES (1 + sizeof(struct tdm_sqe))

static void steer(struct harness *h, uint8_t ctl, struct tdm_sqe *e)
{
	if (ctl & 1)
		e->op = (uint16_t)(1 + e->op % 4);
	if (e->op != TDM_SQE_TASK)
		return;
	struct tdm_sqe_task *t = &e->u.task;
	if (ctl & 2)
		t->kernel_id %= (uint32_t)kernel_count();
	for (int i = 0; i < TDM_MAX_ARGS; i++) {
		if (ctl & 4)
			t->args[i].handle = h->handle[t->args[i].handle % HARNESS_BUFFERS];
		if (ctl & 8) {
			t->args[i].offset %= HARNESS_BUFFER_BYTES;
			t->args[i].length %= HARNESS_BUFFER_BYTES + 1;
		}
	}
}

static void run_accepted(struct harness *h)
{
	int spin = kernel_lookup("spin");
	for (size_t i = 0; i < h->naccepted; i++) {
		struct engine_graph *g = h->accepted[i];
		for (uint32_t t = 0; t < g->ntasks; t++) {
			const struct kernel_def *k = g->tasks[t].kernel;
			if (k != kernel_by_id((uint32_t)spin))
				k->cpu(&g->tasks[t].call);
		}
	}
	harness_finish_all(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tdm_cqe sink[256];
	struct harness h;
	if (harness_init(&h, 64, 64) != 0)
		return 0;
	h.cfg.max_tasks_per_graph = 64;
	for (size_t off = 0; off + REC_BYTES <= size; off += REC_BYTES) {
		struct tdm_sqe e;
		memcpy(&e, data + off + 1, sizeof(e));
		steer(&h, data[off], &e);
		if (!harness_push(&h, &e)) {
			if (harness_run(&h) != 0)
				break; /* the daemon would disconnect this client */
			run_accepted(&h);
			harness_reap(&h, sink, 256);
			harness_push(&h, &e);
		}
	}
	if (harness_run(&h) == 0)
		run_accepted(&h);
	harness_reap(&h, sink, 256);
	harness_fini(&h);
	return 0;
}
