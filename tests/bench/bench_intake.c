/* Intake's cost per task: graphs of fill (writes a buffer) and axpy (reads
 * one, updates another) tasks over 32 buffers, chosen by a fixed LCG, with
 * an explicit edge now and then, pushed through a session's ring and taken
 * in by intake_run (validation, implicit dependencies, successor lists),
 * without an engine: accepted graphs are completed at once.
 *
 *   BENCH intake_ns_per_task <ns> ns tasks=N graph=T
 *
 * Run under callgrind for repeatable instruction counts of intake alone:
 *   valgrind --tool=callgrind --toggle-collect=intake_run build/bench/bench_intake 200 */
#include <stdio.h>
#include <stdlib.h>

#include "common/clock.h"
#include "tests/harness/intake_harness.h"

#define NBUF 32

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

	if (harness_init(&h, 4096, 4096))
		return 1;
	for (int i = 0; i < NBUF; i++) {
		int fd;
		if (session_buffer_alloc(h.s, HARNESS_BUFFER_BYTES, 0, &buf[i], &fd))
			return 1;
		close(fd);
	}
	for (uint32_t g = 0; g < graphs; g++) {
		struct tdm_sqe e = sqe_begin(g + 1, per_graph);
		harness_push(&h, &e);
		for (uint32_t t = 0; t < per_graph; t++) {
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
	printf("BENCH intake_ns_per_task %.1f ns tasks=%llu graph=%u\n", (double)busy / tasks,
	       (unsigned long long)tasks, per_graph);
	harness_fini(&h);
	return 0;
}
