/* The tiled Cholesky factorisation's graph and its check, shared by the
 * cholesky example and the clients of tests that run it (the elastic
 * stress test and bench): header only, static inline.
 *
 * A = L Lᵀ for a symmetric positive definite N x N matrix (N = nt nb,
 * single precision), cut into nt x nt tiles of nb x nb, each tile of the
 * lower half its own shared buffer (row-major, as docs/kernels.md has the
 * tile kernels read them). The graph is the right-looking algorithm, for
 * k = 0 .. nt-1:
 *
 *   spotrf(A[k][k])                                    L[k][k]
 *   strsm(A[k][k], A[i][k])              for i > k     L[i][k]
 *   ssyrk(A[i][k], A[i][i])              for i > k     A[i][i] -= L[i][k] L[i][k]ᵀ
 *   sgemm_nt(A[i][k], A[j][k], A[i][j])  for k < j < i A[i][j] -= L[i][k] L[j][k]ᵀ
 *
 * No edge is given by hand: the daemon orders the tasks from their access
 * modes in the order they were added. The matrix is symmetric with entries
 * in [-1, 1] off the diagonal and N on it, so it is diagonally dominant and
 * positive definite; the check is ||L Lᵀ - A||_F / ||A||_F in double
 * precision. */
#ifndef TANDEM_EXAMPLES_CHOLESKY_TILES_H
#define TANDEM_EXAMPLES_CHOLESKY_TILES_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tandem.h"

#define CHOL_MAX_REL_RESIDUAL 1e-4

struct chol_tile {
	tdm_buffer h;
	float *p; /* the shared buffer: the factor after a run */
	float *a; /* the client's copy of the input tile */
};

struct chol {
	int nt, nb; /* tiles per side, tile size */
	struct chol_tile *t; /* the lower half, nt (nt + 1) / 2 tiles */
};

static inline int chol_ntiles(const struct chol *m)
{
	return m->nt * (m->nt + 1) / 2;
}

/* Tiles of the lower half, i >= j. */
static inline struct chol_tile *chol_tile_at(const struct chol *m, int i, int j)
{
	return &m->t[i * (i + 1) / 2 + j];
}

/* A deterministic value in [-1, 1] for element (r, c) of the whole matrix,
 * the same for (c, r). */
static inline float chol_offdiag(uint64_t r, uint64_t c)
{
	uint64_t lo = r < c ? r : c, hi = r < c ? c : r;
	uint64_t x = (lo << 32 | hi) * 0x9e3779b97f4a7c15ull;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 32;
	return (float)((double)(x >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* Allocates the tiles (shared buffers and the input copies) and fills the
 * input; 0 or a negative error (what is allocated stays for chol_free). */
static inline int chol_alloc(tdm_client *c, int nt, int nb, struct chol *m)
{
	size_t tile_bytes = (size_t)nb * nb * sizeof(float);
	int n = nt * nb;

	m->nt = nt;
	m->nb = nb;
	m->t = calloc((size_t)chol_ntiles(m), sizeof(*m->t));
	if (!m->t)
		return -TDM_ENOMEM;
	for (int i = 0; i < chol_ntiles(m); i++) {
		m->t[i].a = malloc(tile_bytes);
		if (!m->t[i].a)
			return -TDM_ENOMEM;
		int err = tdm_buffer_alloc(c, tile_bytes, 0, &m->t[i].h, (void **)&m->t[i].p);
		if (err)
			return err;
	}
	for (int i = 0; i < nt; i++) {
		for (int j = 0; j <= i; j++) {
			float *a = chol_tile_at(m, i, j)->a;
			for (int r = 0; r < nb; r++) {
				for (int cc = 0; cc < nb; cc++) {
					uint64_t gr = (uint64_t)i * nb + r,
					         gc = (uint64_t)j * nb + cc;
					a[r * nb + cc] = gr == gc ? (float)n : chol_offdiag(gr, gc);
				}
			}
		}
	}
	return 0;
}

/* Frees the input copies (the shared buffers go with the client). */
static inline void chol_free(struct chol *m)
{
	if (!m->t)
		return;
	for (int i = 0; i < chol_ntiles(m); i++)
		free(m->t[i].a);
	free(m->t);
	m->t = NULL;
}

/* The input again in the shared buffers: each run factorises in place. */
static inline void chol_reset(const struct chol *m)
{
	size_t tile_bytes = (size_t)m->nb * m->nb * sizeof(float);

	for (int i = 0; i < chol_ntiles(m); i++)
		memcpy(m->t[i].p, m->t[i].a, tile_bytes);
}

static inline int chol_add(tdm_graph *g, tdm_kernel k, int nargs, const tdm_buffer *bufs, int nb)
{
	struct tdm_task_desc d = { .kernel = k, .nargs = (uint32_t)nargs, .nscalars = 1 };

	for (int i = 0; i < nargs; i++)
		d.args[i] = TDM_ARG(bufs[i], i == nargs - 1 ? TDM_RW : TDM_R, 0, 0);
	d.scalars[0] = TDM_I64(nb);
	return tdm_graph_add_task(g, &d, NULL);
}

/* Adds the right-looking order to g; dependencies follow from the access
 * modes. 0 or a negative error (*what names the step that failed). */
static inline int chol_build_graph(tdm_client *c, tdm_graph *g, const struct chol *m,
                                   const char **what)
{
	tdm_kernel potrf, trsm, syrk, gemm;
	int err, nt = m->nt, nb = m->nb;

#define CHOL_TRY(x, name)                                                                          \
	do {                                                                                       \
		if ((err = (x)) != 0) {                                                            \
			*what = (name);                                                            \
			return err;                                                                \
		}                                                                                  \
	} while (0)
	CHOL_TRY(tdm_kernel_lookup(c, "spotrf", &potrf), "spotrf");
	CHOL_TRY(tdm_kernel_lookup(c, "strsm", &trsm), "strsm");
	CHOL_TRY(tdm_kernel_lookup(c, "ssyrk", &syrk), "ssyrk");
	CHOL_TRY(tdm_kernel_lookup(c, "sgemm_nt", &gemm), "sgemm_nt");
	for (int k = 0; k < nt; k++) {
		tdm_buffer kk = chol_tile_at(m, k, k)->h;
		CHOL_TRY(chol_add(g, potrf, 1, &kk, nb), "add spotrf");
		for (int i = k + 1; i < nt; i++) {
			tdm_buffer b[2] = { kk, chol_tile_at(m, i, k)->h };
			CHOL_TRY(chol_add(g, trsm, 2, b, nb), "add strsm");
		}
		for (int i = k + 1; i < nt; i++) {
			tdm_buffer b[2] = { chol_tile_at(m, i, k)->h, chol_tile_at(m, i, i)->h };
			CHOL_TRY(chol_add(g, syrk, 2, b, nb), "add ssyrk");
			for (int j = k + 1; j < i; j++) {
				tdm_buffer b3[3] = { chol_tile_at(m, i, k)->h,
					             chol_tile_at(m, j, k)->h,
					             chol_tile_at(m, i, j)->h };
				CHOL_TRY(chol_add(g, gemm, 3, b3, nb), "add sgemm_nt");
			}
		}
	}
#undef CHOL_TRY
	return 0;
}

/* ||L Lᵀ - A||_F / ||A||_F over the whole (symmetric) matrix, L gathered
 * from the tiles' lower triangles; INFINITY when out of memory. */
static inline double chol_residual(const struct chol *m)
{
	int nb = m->nb;
	size_t n = (size_t)m->nt * nb;
	float *l = calloc(n * n, sizeof(*l));
	double err = 0, norm = 0;

	if (!l)
		return INFINITY;
	for (size_t r = 0; r < n; r++)
		for (size_t c = 0; c <= r; c++)
			l[r * n + c] = chol_tile_at(m, (int)(r / nb), (int)(c / nb))
			                       ->p[(r % nb) * nb + c % nb];
	for (size_t i = 0; i < n; i++) {
		const float *li = l + i * n;
		for (size_t j = 0; j <= i; j++) {
			const float *lj = l + j * n;
			double s = 0;
			for (size_t k = 0; k <= j; k++)
				s += (double)li[k] * lj[k];
			double a = chol_tile_at(m, (int)(i / nb), (int)(j / nb))
			                   ->a[(i % nb) * nb + j % nb];
			double w = i == j ? 1.0 : 2.0; /* the upper half mirrors the lower */
			err += w * (s - a) * (s - a);
			norm += w * a * a;
		}
	}
	free(l);
	/* NaN (a factor gone wrong) compares false below: report it as such. */
	double res = sqrt(err / norm);
	return isnan(res) ? INFINITY : res;
}

#endif
