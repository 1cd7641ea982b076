/* Intake's cost per task: graphs of fill (writes a buffer) and axpy (reads
 * one, updates another) tasks over 32 buffers, chosen by a fixed LCG, with
 * an explicit edge now and then, pushed through a session's ring and taken
 * in by intake_run (validation, implicit dependencies, successor lists),
 * without an engine: accepted graphs are completed at once.
 *
 *   BENCH intake_ns_per_task <ns> ns tasks=N graph=T
 *
 * With "pooled" as the third argument, graphs are instead decode steps over
 * one pooled KV buffer (graph/2 requests: each appends a row to its own
 * slice, then its attention stand-in reads the slice and updates its own
 * output range), the case range-granular dependencies are for:
 *
 *   BENCH intake_ns_per_task_pooled_kv <ns> ns tasks=N graph=T
 *
 * Run under callgrind for repeatable instruction counts of intake alone:
 *   valgrind --tool=callgrind --toggle-collect=intake_run build/bench/bench_intake 200
 *   valgrind --tool=callgrind --toggle-collect=intake_run build/bench/bench_intake 50 512 pooled */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "tests/harness/intake_harness.h"

#define NBUF 32
#define KV_ROW 256u /* bytes per appended row */
#define KV_SLICE_ROWS 64u

/* axpy over x[xoff, xoff + len) into y[yoff, yoff + len). */
static struct tdm_sqe sqe_axpy_range(uint32_t index, uint32_t x, uint64_t xoff, uint32_t y,
                                     uint64_t yoff, uint64_t len)
{
	struct tdm_sqe e = sqe_axpy(index, x, y);
	e.u.task.args[0].offset = xoff;
	e.u.task.args[0].length = len;
	e.u.task.args[1].offset = yoff;
	e.u.task.args[1].length = len;
	return e;
}

/* One decode step over a pooled KV buffer: tasks 2r (append) and 2r + 1
 * (attention) of request r. Rows so far grow with the step. */
static bool push_pooled_step(struct harness *h, uint32_t kv, uint32_t out, uint32_t per_graph,
                             uint32_t step)
{
	uint32_t rows = 1 + step % (KV_SLICE_ROWS - 1);
	for (uint32_t r = 0; r < per_graph / 2; r++) {
		uint64_t slice = (uint64_t)r * KV_SLICE_ROWS * KV_ROW;
		struct tdm_sqe e =
		        sqe_fill(2 * r, kv, slice + (uint64_t)(rows - 1) * KV_ROW, KV_ROW);
		if (!harness_push(h, &e))
			return false;
		e = sqe_axpy_range(2 * r + 1, kv, slice, out, slice, (uint64_t)rows * KV_ROW);
		if (!harness_push(h, &e))
			return false;
	}
	return true;
}

static uint32_t lcg(uint32_t *s)
{
	*s = *s * 1664525u + 1013904223u;
	return *s >> 8;
}

int main(int argc, char **argv)
{
	static struct harness h;
	uint32_t graphs = argc > 1 ? (uint32_t)atoi(argv[1]) : 2000;
	uint32_t per_graph = argc > 2 ? (uint32_t)atoi(argv[2]) : 64;
	uint32_t buf[NBUF], seed = 12345;
	uint64_t busy = 0, tasks = 0;

	bool pooled = argc > 3 && strcmp(argv[3], "pooled") == 0;
	uint32_t kv = 0, out = 0;

	if (harness_init(&h, 4096, 4096))
		return 1;
	if (pooled) {
		uint64_t bytes = (uint64_t)(per_graph / 2) * KV_SLICE_ROWS * KV_ROW;
		int fd;
		if (per_graph < 2 || session_buffer_alloc(h.s, bytes, 0, &kv, &fd))
			return 1;
		close(fd);
		if (session_buffer_alloc(h.s, bytes, 0, &out, &fd))
			return 1;
		close(fd);
		per_graph &= ~1u;
	}
	for (int i = 0; i < NBUF; i++) {
		int fd;
		if (session_buffer_alloc(h.s, HARNESS_BUFFER_BYTES, 0, &buf[i], &fd))
			return 1;
		close(fd);
	}
	for (uint32_t g = 0; g < graphs; g++) {
		struct tdm_sqe e = sqe_begin(g + 1, per_graph);
		harness_push(&h, &e);
		if (pooled && !push_pooled_step(&h, kv, out, per_graph, g))
			return 1;
		for (uint32_t t = 0; !pooled && t < per_graph; t++) {
			uint32_t r = lcg(&seed);
			uint32_t x = buf[r % NBUF], y = buf[(r >> 5) % NBUF];
			e = r % 3 == 0 ? sqe_fill(t, y, 0, HARNESS_BUFFER_BYTES)
			               : sqe_axpy(t, x, y);
			if (t >= 2 && (r >> 10) % 8 == 0) {
				e.u.task.nedges = 1;
				e.u.task.edges[0] = (r >> 13) % t;
			}
			if (!harness_push(&h, &e))
				return 1;
		}
		e = sqe_end();
		if (!harness_push(&h, &e))
			return 1;
		uint64_t t0 = clock_monotonic_ns();
		if (harness_run(&h) || h.naccepted != 1) {
			fprintf(stderr, "bench_intake: graph %u not accepted\n", g);
			return 1;
		}
		busy += clock_monotonic_ns() - t0;
		tasks += per_graph;
		harness_finish_all(&h);
		struct tdm_cqe c[8];
		while (harness_reap(&h, c, 8))
			;
	}
	printf("BENCH intake_ns_per_task%s %.1f ns tasks=%llu graph=%u\n",
	       pooled ? "_pooled_kv" : "", (double)busy / tasks, (unsigned long long)tasks,
	       per_graph);
	harness_fini(&h);
	return 0;
}
