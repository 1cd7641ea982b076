/* Tiled Cholesky factorisation through tandemd.
 *
 * A = L Lᵀ for a symmetric positive definite N x N matrix (N = T nb, single
 * precision), cut into T x T tiles of nb x nb, each tile of the lower half
 * its own shared buffer (row-major, as docs/kernels.md has the tile kernels
 * read them). The graph is the right-looking algorithm, for k = 0 .. T-1:
 *
 *   spotrf(A[k][k])                                    L[k][k]
 *   strsm(A[k][k], A[i][k])              for i > k     L[i][k]
 *   ssyrk(A[i][k], A[i][i])              for i > k     A[i][i] -= L[i][k] L[i][k]ᵀ
 *   sgemm_nt(A[i][k], A[j][k], A[i][j])  for k < j < i A[i][j] -= L[i][k] L[j][k]ᵀ
 *
 * No edge is given by hand: the daemon orders the tasks from their access
 * modes in the order they were added. The matrix is symmetric with entries
 * in [-1, 1] off the diagonal and N on it, so it is diagonally dominant and
 * positive definite. The client checks ||L Lᵀ - A||_F / ||A||_F < 1e-4 in
 * double precision and prints the wall time of each factorisation.
 *
 * usage: cholesky [--socket PATH] [--tiles T] [--nb NB] [--repeat R]
 *        (defaults: the default socket, 8 tiles of 256, 1 run)
 */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tandem.h"

#define MAX_REL_RESIDUAL 1e-4

struct tile {
	tdm_buffer h;
	float *p; /* the shared buffer: the factor after a run */
	float *a; /* the client's copy of the input tile */
};

static int nt; /* tiles per side */
static int nb; /* tile size */

/* Tiles of the lower half, i >= j. */
static struct tile *tile_at(struct tile *t, int i, int j)
{
	return &t[i * (i + 1) / 2 + j];
}

static int check(int err, const char *what)
{
	if (err)
		fprintf(stderr, "cholesky: %s: %s\n", what, tdm_strerror(err));
	return err;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A deterministic value in [-1, 1] for element (r, c) of the whole matrix,
 * the same for (c, r). */
static float offdiag(uint64_t r, uint64_t c)
{
	uint64_t lo = r < c ? r : c, hi = r < c ? c : r;
	uint64_t x = (lo << 32 | hi) * 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (float)((double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static void fill_input(struct tile *t)
{
	int n = nt * nb;
	for (int i = 0; i < nt; i++) {
		for (int j = 0; j <= i; j++) {
			float *a = tile_at(t, i, j)->a;
			for (int r = 0; r < nb; r++) {
				for (int c = 0; c < nb; c++) {
					uint64_t gr = (uint64_t)i * nb + r,
					         gc = (uint64_t)j * nb + c;
					a[r * nb + c] = gr == gc ? (float)n : offdiag(gr, gc);
				}
			}
		}
	}
}

static int add(tdm_graph *g, tdm_kernel k, int nargs, const tdm_buffer *bufs, const char *what)
{
	struct tdm_task_desc d = { .kernel = k, .nargs = (uint32_t)nargs, .nscalars = 1 };
	for (int i = 0; i < nargs; i++)
		d.args[i] = TDM_ARG(bufs[i], i == nargs - 1 ? TDM_RW : TDM_R, 0, 0);
	d.scalars[0] = TDM_I64(nb);
	return check(tdm_graph_add_task(g, &d, NULL), what);
}

/* The right-looking order; dependencies follow from the access modes. */
static int build_graph(tdm_client *c, tdm_graph *g, struct tile *t)
{
	tdm_kernel potrf, trsm, syrk, gemm;
	if (check(tdm_kernel_lookup(c, "spotrf", &potrf), "spotrf") ||
	    check(tdm_kernel_lookup(c, "strsm", &trsm), "strsm") ||
	    check(tdm_kernel_lookup(c, "ssyrk", &syrk), "ssyrk") ||
	    check(tdm_kernel_lookup(c, "sgemm_nt", &gemm), "sgemm_nt"))
		return -1;
	for (int k = 0; k < nt; k++) {
		tdm_buffer kk = tile_at(t, k, k)->h;
		if (add(g, potrf, 1, &kk, "add spotrf"))
			return -1;
		for (int i = k + 1; i < nt; i++) {
			tdm_buffer b[2] = { kk, tile_at(t, i, k)->h };
			if (add(g, trsm, 2, b, "add strsm"))
				return -1;
		}
		for (int i = k + 1; i < nt; i++) {
			tdm_buffer b[2] = { tile_at(t, i, k)->h, tile_at(t, i, i)->h };
			if (add(g, syrk, 2, b, "add ssyrk"))
				return -1;
			for (int j = k + 1; j < i; j++) {
				tdm_buffer m[3] = { tile_at(t, i, k)->h, tile_at(t, j, k)->h,
					            tile_at(t, i, j)->h };
				if (add(g, gemm, 3, m, "add sgemm_nt"))
					return -1;
			}
		}
	}
	return 0;
}

/* ||L Lᵀ - A||_F / ||A||_F over the whole (symmetric) matrix, L gathered
 * from the tiles' lower triangles. */
static double residual(struct tile *t)
{
	size_t n = (size_t)nt * nb;
	float *l = calloc(n * n, sizeof(*l));
	double err = 0, norm = 0;
	if (!l)
		return INFINITY;
	for (size_t r = 0; r < n; r++)
		for (size_t c = 0; c <= r; c++)
			l[r * n + c] =
			        tile_at(t, (int)(r / nb), (int)(c / nb))->p[(r % nb) * nb + c % nb];
	for (size_t i = 0; i < n; i++) {
		const float *li = l + i * n;
		for (size_t j = 0; j <= i; j++) {
			const float *lj = l + j * n;
			double s = 0;
			for (size_t k = 0; k <= j; k++)
				s += (double)li[k] * lj[k];
			double a =
			        tile_at(t, (int)(i / nb), (int)(j / nb))->a[(i % nb) * nb + j % nb];
			double w = i == j ? 1.0 : 2.0; /* the upper half mirrors the lower */
			err += w * (s - a) * (s - a);
			norm += w * a * a;
		}
	}
	free(l);
	return sqrt(err / norm);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cholesky [--socket PATH] [--tiles T] [--nb NB] [--repeat R]\n"
	        "Factorises a %s matrix of T x T tiles of NB x NB floats (defaults 8, 256)\n"
	        "through tandemd R times (default 1) and checks the factor.\n",
	        "symmetric positive definite");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "tiles", required_argument, NULL, 't' },
		{ "nb", required_argument, NULL, 'n' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *sock = NULL;
	int repeat = 1, opt;
	nt = 8;
	nb = 256;
	while ((opt = getopt_long(argc, argv, "s:t:n:r:h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': sock = optarg; break;
		case 't':
			if (parse_int(optarg, 1, 64, &nt)) {
				fprintf(stderr, "cholesky: --tiles: 1 .. 64\n");
				return 2;
			}
			break;
		case 'n':
			if (parse_int(optarg, 1, 4096, &nb)) {
				fprintf(stderr, "cholesky: --nb: 1 .. 4096\n");
				return 2;
			}
			break;
		case 'r':
			if (parse_int(optarg, 1, 100000, &repeat)) {
				fprintf(stderr, "cholesky: --repeat: 1 .. 100000\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	int ntiles = nt * (nt + 1) / 2, n = nt * nb;
	size_t tile_elems = (size_t)nb * nb, tile_bytes = tile_elems * sizeof(float);
	tdm_client *c;
	if (check(tdm_connect(&(struct tdm_connect_opts){ .socket_path = sock }, &c), "connect"))
		return 1;
	struct tile *t = calloc((size_t)ntiles, sizeof(*t));
	if (!t)
		return 1;
	for (int i = 0; i < ntiles; i++) {
		t[i].a = malloc(tile_bytes);
		if (!t[i].a ||
		    check(tdm_buffer_alloc(c, tile_bytes, 0, &t[i].h, (void **)&t[i].p), "buffer"))
			return 1;
	}
	fill_input(t);

	tdm_graph *g = tdm_graph_new(c);
	if (!g || build_graph(c, g, t))
		return 1;
	uint32_t ntasks = tdm_graph_task_count(g);
	double best = INFINITY, total = 0;
	for (int r = 0; r < repeat; r++) {
		/* The input again: each run factorises in place. */
		for (int i = 0; i < ntiles; i++)
			memcpy(t[i].p, t[i].a, tile_bytes);
		uint64_t t0 = now_ns();
		if (check(tdm_graph_submit(g), "submit") || check(tdm_wait(g, -1), "graph"))
			return 1;
		double s = (double)(now_ns() - t0) / 1e9;
		total += s;
		if (s < best)
			best = s;
	}
	double flops = (double)n * n * n / 3.0;
	double res = residual(t);
	int ok = res < MAX_REL_RESIDUAL;
	printf("cholesky: N = %d in %dx%d tiles of %d, %u tasks on %u devices\n", n, nt, nt, nb,
	       ntasks, tdm_device_count(c));
	printf("wall time: best %.3f ms, mean %.3f ms over %d run%s (%.1f GFLOP/s at best)\n",
	       best * 1e3, total / repeat * 1e3, repeat, repeat == 1 ? "" : "s",
	       flops / best / 1e9);
	printf("||L L^T - A|| / ||A|| = %.2e\n", res);
	printf("%s\n", ok ? "ok" : "WRONG");

	tdm_graph_free(g);
	for (int i = 0; i < ntiles; i++)
		free(t[i].a);
	free(t);
	tdm_disconnect(c);
	return ok ? 0 : 1;
}
