/* Blocked matrix product through tandemd.
 *
 * R = 2 * (A x B) + 1, with A, B, C and R split into T x T tiles, one
 * shared buffer per tile. The graph: `fill` zeroes each C tile, `sgemm`
 * accumulates C(i,j) += A(i,k) B(k,j) over k, and `axpy` adds 2 C(i,j) to
 * R(i,j) (which the client set to ones). No edge is given by hand: the
 * daemon orders the tasks from their access modes (fill before the sgemms
 * of a tile, the sgemms of a tile one after another, axpy last). The client
 * checks R against its own plain triple loop and prints the schedule.
 *
 * usage: blocked_gemm [SOCKET] [N] [T]    (defaults: default socket, 384, 128)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem.h"

struct tile {
	tdm_buffer h;
	float *p;
};

static int check(int err, const char *what)
{
	if (err)
		fprintf(stderr, "blocked_gemm: %s: %s\n", what, tdm_strerror(err));
	return err;
}

static int alloc_tiles(tdm_client *c, struct tile *t, int n, size_t bytes)
{
	for (int i = 0; i < n; i++)
		if (check(tdm_buffer_alloc(c, bytes, 0, &t[i].h, (void **)&t[i].p), "buffer"))
			return -1;
	return 0;
}

int main(int argc, char **argv)
{
	const char *sock = argc > 1 ? argv[1] : NULL;
	int n = argc > 2 ? atoi(argv[2]) : 384;
	int t = argc > 3 ? atoi(argv[3]) : 128;
	if (n <= 0 || t <= 0 || n % t) {
		fprintf(stderr, "blocked_gemm: N must be a positive multiple of T\n");
		return 2;
	}
	int nt = n / t, ntiles = nt * nt;
	size_t tile_bytes = (size_t)t * t * sizeof(float);
	tdm_client *c;
	tdm_kernel k_fill, k_gemm, k_axpy;

	if (check(tdm_connect(&(struct tdm_connect_opts){ .socket_path = sock }, &c), "connect"))
		return 1;
	if (check(tdm_kernel_lookup(c, "fill", &k_fill), "fill") ||
	    check(tdm_kernel_lookup(c, "sgemm", &k_gemm), "sgemm") ||
	    check(tdm_kernel_lookup(c, "axpy", &k_axpy), "axpy"))
		return 1;

	struct tile *a = calloc((size_t)ntiles, sizeof(*a)),
	            *b = calloc((size_t)ntiles, sizeof(*b));
	struct tile *cc = calloc((size_t)ntiles, sizeof(*cc)),
	            *r = calloc((size_t)ntiles, sizeof(*r));
	if (!a || !b || !cc || !r || alloc_tiles(c, a, ntiles, tile_bytes) ||
	    alloc_tiles(c, b, ntiles, tile_bytes) || alloc_tiles(c, cc, ntiles, tile_bytes) ||
	    alloc_tiles(c, r, ntiles, tile_bytes))
		return 1;

	/* Inputs: deterministic pseudo-random values in [-1, 1]. */
	unsigned seed = 12345;
	for (int i = 0; i < ntiles; i++) {
		for (int e = 0; e < t * t; e++) {
			seed = seed * 1103515245u + 12345u;
			a[i].p[e] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
			seed = seed * 1103515245u + 12345u;
			b[i].p[e] = (float)((seed >> 8) % 2001) / 1000.0f - 1.0f;
			r[i].p[e] = 1.0f;
			cc[i].p[e] = 42.0f; /* garbage the fill must clear */
		}
	}

	tdm_graph *g = tdm_graph_new(c);
	const char **names = calloc((size_t)ntiles * (nt + 2), sizeof(*names));
	if (!g || !names)
		return 1;
	tdm_graph_want_task_info(g, 1);
	for (int i = 0; i < nt; i++) {
		for (int j = 0; j < nt; j++) {
			struct tile *ct = &cc[i * nt + j];
			struct tdm_task_desc fill = { .kernel = k_fill, .nargs = 1, .nscalars = 1 };
			fill.args[0] = TDM_ARG(ct->h, TDM_W, 0, 0);
			fill.scalars[0] = TDM_F32(0.0f);
			names[tdm_graph_task_count(g)] = "fill";
			if (check(tdm_graph_add_task(g, &fill, NULL), "add fill"))
				return 1;
			for (int k = 0; k < nt; k++) {
				struct tdm_task_desc mm = { .kernel = k_gemm,
					                    .nargs = 3,
					                    .nscalars = 5 };
				mm.args[0] = TDM_ARG(a[i * nt + k].h, TDM_R, 0, 0);
				mm.args[1] = TDM_ARG(b[k * nt + j].h, TDM_R, 0, 0);
				mm.args[2] = TDM_ARG(ct->h, TDM_RW, 0, 0);
				mm.scalars[0] = TDM_I64(t);
				mm.scalars[1] = TDM_I64(t);
				mm.scalars[2] = TDM_I64(t);
				mm.scalars[3] = TDM_F32(1.0f);
				mm.scalars[4] = TDM_F32(1.0f);
				names[tdm_graph_task_count(g)] = "sgemm";
				if (check(tdm_graph_add_task(g, &mm, NULL), "add sgemm"))
					return 1;
			}
			struct tdm_task_desc ax = { .kernel = k_axpy, .nargs = 2, .nscalars = 1 };
			ax.args[0] = TDM_ARG(ct->h, TDM_R, 0, 0);
			ax.args[1] = TDM_ARG(r[i * nt + j].h, TDM_RW, 0, 0);
			ax.scalars[0] = TDM_F32(2.0f);
			names[tdm_graph_task_count(g)] = "axpy";
			if (check(tdm_graph_add_task(g, &ax, NULL), "add axpy"))
				return 1;
		}
	}
	if (check(tdm_graph_submit(g), "submit") || check(tdm_wait(g, -1), "graph"))
		return 1;

	/* Reference: plain triple loop in double precision. */
	double max_err = 0;
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < n; j++) {
			double sum = 0;
			for (int k = 0; k < n; k++) {
				float av = a[(i / t) * nt + k / t].p[(i % t) * t + k % t];
				float bv = b[(k / t) * nt + j / t].p[(k % t) * t + j % t];
				sum += (double)av * bv;
			}
			double want = 2 * sum + 1;
			double got = r[(i / t) * nt + j / t].p[(i % t) * t + j % t];
			double e = fabs(got - want) / (1.0 + fabs(want));
			if (e > max_err)
				max_err = e;
		}
	}

	uint32_t ntasks = tdm_graph_task_count(g);
	uint64_t t0 = tdm_graph_task_info(g, 0)->queued_ns;
	for (uint32_t i = 0; i < ntasks; i++)
		if (tdm_graph_task_info(g, i)->queued_ns < t0)
			t0 = tdm_graph_task_info(g, i)->queued_ns;
	printf("schedule (%u tasks, %u devices; times in us from the first release)\n", ntasks,
	       tdm_device_count(c));
	printf("%5s %-6s %6s %10s %10s %10s\n", "task", "kernel", "device", "queued", "start",
	       "end");
	uint64_t end = 0;
	for (uint32_t i = 0; i < ntasks; i++) {
		const struct tdm_task_info *ti = tdm_graph_task_info(g, i);
		printf("%5u %-6s %6u %10.1f %10.1f %10.1f\n", i, names[i], ti->device,
		       (ti->queued_ns - t0) / 1e3, (ti->start_ns - t0) / 1e3,
		       (ti->end_ns - t0) / 1e3);
		if (ti->end_ns > end)
			end = ti->end_ns;
	}
	printf("makespan %.3f ms; %dx%d product in %dx%d tiles; max relative error %.2e\n",
	       (end - t0) / 1e6, n, n, t, t, max_err);
	int ok = max_err < 1e-4;
	printf("result: %s\n", ok ? "correct" : "WRONG");

	tdm_graph_free(g);
	free(names);
	tdm_disconnect(c);
	free(a);
	free(b);
	free(cc);
	free(r);
	return ok ? 0 : 1;
}
