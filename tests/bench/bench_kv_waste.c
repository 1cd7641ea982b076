/* KV memory waste of growable buffers over a replay of serving requests.
 *
 * Requests (context and generated lengths) come from the Azure LLM
 * inference 2023 conversation trace under ../shared/benchmarks/llm-traces/
 * when present, else from a generated stand-in with the same medians and
 * spreads (lognormal: context p50 1020, output p50 129). Each request gets
 * one KV buffer for the whole model (LLaMA-2-7B at fp16: 2 x 32 layers x
 * 4096 x 2 bytes = 512 KiB per token; argv[3] sets another) reserved for 8192 tokens, through the
 * daemon's own session code (session_buffer_reserve/grow); up to `batch`
 * requests run at once (continuous batching): prefill grows a buffer to its
 * context at once, each decode step by one token, and after each growth an
 * attention reads the whole KV on a simulated GPU (residency_acquire), so
 * the device replica grows too.
 *
 * Reported, summed over every step of the replay (time-weighted), as
 * 100 x (backed - used) / used:
 *   side=host            what the session backed and charged (chunks);
 *   side=device_vmm      device memory mapped by mem_grow (sim backend,
 *                        2 MiB granules, as CUDA's VMM);
 *   side=device_realloc  device memory held where the backend cannot
 *                        reserve (OpenCL): whole allocations with headroom.
 * Also the chunks (host mappings) per request and the reallocations of
 * the device_realloc side. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/sim/sim_backend.h"
#include "common/xorshift.h"
#include "daemon/config.h"
#include "daemon/session.h"
#include "placement/residency.h"
#include "tandem.h"
#include "tests/bench/bench_util.h"

#define MAX_TOKENS 8192u

static uint64_t KV_PER_TOKEN = UINT64_C(512) << 10;
#define TRACE "../shared/benchmarks/llm-traces/AzureLLMInferenceTrace_conv_2023.csv"

struct req {
	uint32_t context, generated; /* tokens */
	uint32_t done; /* generated so far */
	uint32_t handle;
	struct res_data plain; /* the device_realloc side's replica state */
	bool active;
};

static uint32_t clip(double v, uint32_t lo, uint32_t hi)
{
	return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

/* Box-Muller over xorshift: a standard normal. */
static double normal(uint64_t *s)
{
	double u1 = ((double)(xorshift64s(s) >> 11) + 1.0) / 9007199254740993.0;
	double u2 = (double)(xorshift64s(s) >> 11) / 9007199254740992.0;
	return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* The first n requests of the trace, or generated ones; returns how many. */
static size_t load_requests(struct req *r, size_t n, const char **source)
{
	FILE *f = fopen(TRACE, "r");
	size_t k = 0;
	if (f) {
		char line[256];
		if (fgets(line, sizeof(line), f)) /* header */
			while (k < n && fgets(line, sizeof(line), f)) {
				const char *c = strchr(line, ',');
				unsigned ctx, gen;
				if (!c || sscanf(c + 1, "%u,%u", &ctx, &gen) != 2)
					continue;
				r[k].context = clip(ctx, 1, MAX_TOKENS - 1);
				r[k].generated = clip(gen, 1, MAX_TOKENS - r[k].context);
				k++;
			}
		fclose(f);
		*source = "conv";
		if (k == n)
			return k;
	}
	fprintf(stderr, "bench_kv_waste: %s absent: generated Azure-like lengths\n", TRACE);
	uint64_t s = 0x9e3779b97f4a7c15ull;
	for (k = 0; k < n; k++) {
		r[k].context = clip(1020.0 * exp(0.9 * normal(&s)), 1, MAX_TOKENS - 1);
		r[k].generated = clip(129.0 * exp(1.0 * normal(&s)), 1, MAX_TOKENS - r[k].context);
	}
	*source = "generated";
	return k;
}

/* An attention over the whole KV on the device node (node 1). */
static void attend(struct residency *res, struct res_data *d)
{
	struct res_arg a = { .data = d, .off = 0, .len = d->bytes, .mode = TDM_R };
	struct backend_event *waits[2];
	size_t nwaits = 0;
	void *mem[1];
	uint64_t off[1];
	if (residency_acquire(res, 1, &a, 1, waits, &nwaits, mem, off) != 0) {
		fprintf(stderr, "bench_kv_waste: acquire failed\n");
		exit(1);
	}
	residency_release(res, 1, &a, 1, true);
}

int main(int argc, char **argv)
{
	size_t nreq = argc > 1 ? (size_t)atoi(argv[1]) : 400;
	uint32_t batch = argc > 2 ? (uint32_t)atoi(argv[2]) : 32;
	/* Bytes of KV per token: 512 KiB (LLaMA-2-7B, all layers in one
	 * buffer); 16384 is one layer's. */
	if (argc > 3)
		KV_PER_TOKEN = strtoull(argv[3], NULL, 10);
	struct req *rq = calloc(nreq, sizeof(*rq));
	const char *source;
	if (!rq || !nreq || !batch || !KV_PER_TOKEN || KV_PER_TOKEN > (UINT64_C(1) << 30))
		return 1;
	nreq = load_requests(rq, nreq, &source);
	double final_kv = 0; /* every request's KV at its end */
	for (size_t i = 0; i < nreq; i++)
		final_kv += (double)(rq[i].context + rq[i].generated) * KV_PER_TOKEN;

	/* A session of the daemon's, on residencies with a simulated GPU. */
	struct daemon_config cfg;
	struct daemon_counters counters = { 0 };
	_Atomic bool draining = false;
	config_defaults(&cfg);
	cfg.buffer_quota_bytes = UINT64_C(1) << 48;
	cfg.max_buffers = 1u << 20;
	struct sim_world world = { 0 };
	struct sim_device sd_vmm = { .world = &world, .index = 0, .node = 1 };
	struct sim_world world2 = { 0 };
	struct sim_device sd_plain = { .world = &world2, .index = 0, .node = 1 };
	struct backend_ops plain_ops = backend_sim;
	plain_ops.mem_reserve = NULL;
	plain_ops.mem_grow = NULL;
	struct backend_device gpu = { .name = "simgpu",
		                      .ops = &backend_sim,
		                      .priv = &sd_vmm,
		                      .mem_bytes = UINT64_C(1) << 40,
		                      .node = 1 };
	struct backend_device gpu2 = { .name = "simgpu",
		                       .ops = &plain_ops,
		                       .priv = &sd_plain,
		                       .mem_bytes = UINT64_C(1) << 40,
		                       .node = 1 };
	struct residency res, res_plain;
	residency_init(&res);
	residency_init(&res_plain);
	residency_add_node(&res, &gpu, 0);
	residency_add_node(&res_plain, &gpu2, 0);
	struct session_env env = {
		.cfg = &cfg, .counters = &counters, .draining = &draining, .res = &res
	};
	struct session *s;
	if (session_create(&env, 1, (uint32_t)getuid(), NULL, &s) != 0) {
		fprintf(stderr, "bench_kv_waste: no session\n");
		return 1;
	}

	double used_sum = 0, host_waste = 0, vmm_waste = 0, plain_waste = 0;
	uint64_t chunks = 0, steps = 0;
	size_t next = 0, active = 0, finished = 0;
	struct req **slot = calloc(batch, sizeof(*slot));
	while (finished < nreq) {
		/* Admit (prefill: the context at once). */
		for (uint32_t b = 0; b < batch && next < nreq; b++) {
			if (slot[b])
				continue;
			struct req *r = &rq[next++];
			struct tdm_buf_grow_reply gr;
			int fd;
			if (session_buffer_reserve(s, (uint64_t)MAX_TOKENS * KV_PER_TOKEN,
			                           TDM_BUF_KV, &r->handle) != 0 ||
			    session_buffer_grow(s, r->handle, r->context * KV_PER_TOKEN, &gr,
			                        &fd) != 0) {
				fprintf(stderr, "bench_kv_waste: reserve/grow failed\n");
				return 1;
			}
			if (fd >= 0)
				close(fd);
			struct buffer *buf = session_buffer_lookup(s, r->handle);
			residency_data_init(&res_plain, &r->plain, buf->base, 0, r->handle, true);
			residency_data_set_growable(&res_plain, &r->plain, buf->bytes);
			residency_data_grow(&res_plain, &r->plain, r->context * KV_PER_TOKEN);
			attend(&res, &buf->data);
			attend(&res_plain, &r->plain);
			slot[b] = r;
			active++;
		}
		/* One decode step: every active request appends a token. */
		uint64_t used = 0;
		for (uint32_t b = 0; b < batch; b++) {
			struct req *r = slot[b];
			if (!r)
				continue;
			r->done++;
			uint64_t bytes = (uint64_t)(r->context + r->done) * KV_PER_TOKEN;
			struct tdm_buf_grow_reply gr;
			int fd;
			if (session_buffer_grow(s, r->handle, bytes, &gr, &fd) != 0) {
				fprintf(stderr, "bench_kv_waste: grow failed\n");
				return 1;
			}
			if (fd >= 0)
				close(fd);
			struct buffer *buf = session_buffer_lookup(s, r->handle);
			residency_data_grow(&res_plain, &r->plain, bytes);
			attend(&res, &buf->data);
			attend(&res_plain, &r->plain);
			used += bytes;
		}
		used_sum += (double)used;
		host_waste += (double)(atomic_load(&s->buffer_bytes) - used);
		vmm_waste += (double)(world.mapped_bytes - used);
		plain_waste += (double)(res_plain.nodes[1].used - used);
		steps++;
		/* Retire the finished ones. */
		for (uint32_t b = 0; b < batch; b++) {
			struct req *r = slot[b];
			if (!r || r->done < r->generated)
				continue;
			chunks += session_buffer_lookup(s, r->handle)->nchunks;
			residency_data_fini(&res_plain, &r->plain);
			session_buffer_free(s, r->handle);
			slot[b] = NULL;
			active--;
			finished++;
		}
	}
	char keys[256];
	const char *sides[] = { "host", "device_vmm", "device_realloc" };
	double waste[] = { host_waste, vmm_waste, plain_waste };
	for (int i = 0; i < 3; i++) {
		snprintf(keys, sizeof(keys),
		         "side=%s trace=%s requests=%zu batch=%u kv_per_token=%llu steps=%llu",
		         sides[i], source, nreq, batch, (unsigned long long)KV_PER_TOKEN,
		         (unsigned long long)steps);
		bench_report("kv_waste_pct", 100.0 * waste[i] / used_sum, "pct", keys);
	}
	snprintf(keys, sizeof(keys), "trace=%s requests=%zu", source, nreq);
	bench_report("kv_host_chunks_per_request", (double)chunks / (double)nreq, "chunks", keys);
	snprintf(keys, sizeof(keys), "side=device_realloc trace=%s requests=%zu", source, nreq);
	/* What reallocation costs there: bytes copied in, per byte of KV. The
	 * bytes each growth adds are the host's (residency_data_grow), so each
	 * is copied in once when first read: 1 where the replica grows in
	 * place, more where a reallocation drops it and the next read copies
	 * the whole use again. */
	bench_report("kv_realloc_copy_ratio", (double)res_plain.nodes[1].bytes_in / final_kv,
	             "ratio", keys);
	snprintf(keys, sizeof(keys), "side=device_vmm trace=%s requests=%zu", source, nreq);
	bench_report("kv_realloc_copy_ratio", (double)res.nodes[1].bytes_in / final_kv, "ratio",
	             keys);
	session_close(s);
	session_unref(s);
	residency_fini(&res);
	residency_fini(&res_plain);
	sim_world_fini(&world);
	sim_world_fini(&world2);
	free(slot);
	free(rq);
	return 0;
}
