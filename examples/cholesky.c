/* Tiled Cholesky factorisation through tandemd.
 *
 * The graph, the matrix and the check are in cholesky_tiles.h: the
 * right-looking algorithm over T x T tiles of NB x NB floats, checked by
 * ||L Lᵀ - A||_F / ||A||_F < 1e-4 in double precision. Prints the wall
 * time of each factorisation.
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

#include "cholesky_tiles.h"
#include "tandem.h"

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
	int repeat = 1, opt, nt = 8, nb = 256;
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

	int n = nt * nb;
	tdm_client *c;
	struct chol m = { 0 };
	const char *what = "graph";
	if (check(tdm_connect(&(struct tdm_connect_opts){ .socket_path = sock }, &c), "connect") ||
	    check(chol_alloc(c, nt, nb, &m), "buffer"))
		return 1;

	tdm_graph *g = tdm_graph_new(c);
	if (!g || check(chol_build_graph(c, g, &m, &what), what))
		return 1;
	uint32_t ntasks = tdm_graph_task_count(g);
	double best = INFINITY, total = 0;
	for (int r = 0; r < repeat; r++) {
		chol_reset(&m);
		uint64_t t0 = now_ns();
		if (check(tdm_graph_submit(g), "submit") || check(tdm_wait(g, -1), "graph"))
			return 1;
		double s = (double)(now_ns() - t0) / 1e9;
		total += s;
		if (s < best)
			best = s;
	}
	double flops = (double)n * n * n / 3.0;
	double res = chol_residual(&m);
	int ok = res < CHOL_MAX_REL_RESIDUAL;
	printf("cholesky: N = %d in %dx%d tiles of %d, %u tasks on %u devices\n", n, nt, nt, nb,
	       ntasks, tdm_device_count(c));
	printf("wall time: best %.3f ms, mean %.3f ms over %d run%s (%.1f GFLOP/s at best)\n",
	       best * 1e3, total / repeat * 1e3, repeat, repeat == 1 ? "" : "s",
	       flops / best / 1e9);
	printf("||L L^T - A|| / ||A|| = %.2e\n", res);
	printf("%s\n", ok ? "ok" : "WRONG");

	tdm_graph_free(g);
	chol_free(&m);
	tdm_disconnect(c);
	return ok ? 0 : 1;
}
