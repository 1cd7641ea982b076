/* Scale events in simulation (sim/elastic.h, docs/elastic-sim.md): a
 * second GPU added to a serving workload, live against stop + reconfigure
 * + restart (ElasticMoE, arXiv 2510.02613, reports about 9x lower
 * scale-up latency than restarting).
 *
 * On machines/t4x2-xeon.toml and machines/h100x2.toml (gpu1 absent at
 * start), MoE models with experts partitioned over the GPUs and a dense
 * LLM served data parallel (MoE: 16 requests decoding; dense: 512
 * requests, at most 256 a GPU, the others waiting), prompts of 256 tokens,
 * outputs of 512; gpu1 added at t = 20 s of 40 s simulated:
 *   BENCH elastic_sim_first_token_ms <v> ms machine=M model=MD mode=live|restart
 *     from the add to the first decode token the new configuration made
 *     (live: the first step in which gpu1 computed);
 *   BENCH elastic_sim_restart_over_live <v> ratio machine=M model=MD
 *   BENCH elastic_sim_throughput_dip <v> ratio machine=M model=MD mode=...
 *     decode tokens/s from the add until the new placement is in place
 *     (live: the last copy arrived; restart: serving again) over the
 *     steady state before it;
 *   BENCH elastic_sim_throughput_gain <v> ratio ... tokens/s after over before;
 *   BENCH elastic_sim_bytes_over_min <v> ratio machine=M model=MD mode=...
 *     bytes moved (restart: loaded again) over what the new placement
 *     needs that was not where it wants it.
 * (Models whose weights fit one GPU whole, such as qwen1.5-moe on an H100,
 * give the new GPU no experts: it never computes, so they are left out.)
 * Task graphs through the engine (sim.c): a tiled Cholesky (16 x 16 tiles
 * of 960) under dmda and heft, gpu1 added, then gpu0 drained (t4x2-xeon
 * at 20 and 60 ms, h100x2 at 5 and 12 ms):
 *   BENCH elastic_sim_first_task_ms <v> ms machine=M policy=P
 *     from the add to the first task started on gpu1;
 *   BENCH elastic_sim_drain_ms <v> ms machine=M policy=P
 *     from the drain to gpu0 empty;
 *   BENCH elastic_sim_makespan_ms <v> ms machine=M policy=P events=none|add|add+drain
 * Simulated time: deterministic, no wall clock. */
#include <stdio.h>
#include <string.h>

#include "bench_util.h"
#include "common/log.h"
#include "sim/elastic.h"
#include "sim/machine.h"
#include "sim/sim.h"
#include "workload/scale_events.h"
#include "workload/workload.h"

struct cell {
	const char *machine;
	bool moe;
	const char *model;
};

static const struct cell cells[] = {
	{ "t4x2-xeon", true, "dsv2-lite" },
	{ "t4x2-xeon", true, "qwen1.5-moe" },
	{ "h100x2", true, "mixtral-8x7b" },
	{ "h100x2", false, "llama3.1-8b" },
};

#define ADD_AT_S 20
#define DURATION_S 40

static int run_mode(const struct machine *m, const struct cell *c, bool restart,
                    struct es_result *r)
{
	struct scale_events ev;
	char err[512];
	const char *text = "t=20s add gpu1";

	if (scale_events_parse(text, strlen(text), "bench", &ev, err, sizeof(err)))
		goto fail;
	struct es_opts o = { .moe = c->moe,
		             .model = c->model,
		             .batch = c->moe ? 16 : 512,
		             .max_batch = c->moe ? 0 : 256,
		             .prompt = 256,
		             .output = 512,
		             .duration_ns = DURATION_S * 1e9,
		             .restart = restart,
		             .seed = 1,
		             .events = &ev };
	int rc = es_run(m, &o, r, err, sizeof(err));
	scale_events_free(&ev);
	if (!rc)
		return 0;
fail:
	fprintf(stderr, "bench_elastic_sim: %s %s: %s\n", c->machine, c->model, err);
	return -1;
}

/* Task graphs through the engine simulation. */
static int engine_cells(void)
{
	static const char *const machines[] = { "t4x2-xeon", "h100x2" };
	static const char *const policies[] = { "dmda", "heft" };
	/* Per machine: the add a fifth of the way in, the drain at about half
	 * of the run without events. */
	static const char *const events[2][3] = {
		{ NULL, "t=20ms add gpu1", "t=20ms add gpu1; t=60ms drain gpu0" },
		{ NULL, "t=5ms add gpu1", "t=5ms add gpu1; t=12ms drain gpu0" },
	};
	static const char *const label[] = { "none", "add", "add+drain" };
	struct workload w;
	char err[512], keys[160];
	int failed = 0;

	wl_init(&w);
	if (wl_gen_tiled(WL_TILED_CHOLESKY, 16, 960, &w, err, sizeof(err))) {
		fprintf(stderr, "bench_elastic_sim: %s\n", err);
		return 1;
	}
	for (size_t mi = 0; mi < 2; mi++) {
		static struct machine m;
		char path[128];
		machine_init(&m);
		snprintf(path, sizeof(path), "machines/%s.toml", machines[mi]);
		if (machine_load(path, &m, err, sizeof(err))) {
			fprintf(stderr, "bench_elastic_sim: %s\n", err);
			failed = 1;
			continue;
		}
		for (size_t p = 0; p < 2; p++)
			for (size_t e = 0; e < 3; e++) {
				struct scale_events ev = { 0 };
				struct sim_result r;
				if (events[mi][e] &&
				    scale_events_parse(events[mi][e], strlen(events[mi][e]),
				                       "bench", &ev, err, sizeof(err)))
					return 1;
				struct sim_opts o = { .policy = policies[p],
					              .events = events[mi][e] ? &ev : NULL };
				int rc = sim_run(&m, &w, &o, &r, err, sizeof(err));
				scale_events_free(&ev);
				if (rc) {
					fprintf(stderr, "bench_elastic_sim: %s %s: %s\n",
					        machines[mi], policies[p], err);
					failed = 1;
					continue;
				}
				snprintf(keys, sizeof(keys), "machine=%s policy=%s", machines[mi],
				         policies[p]);
				if (e == 1 && r.events[0].first_task_ns >= 0)
					bench_report("elastic_sim_first_task_ms",
					             (r.events[0].first_task_ns -
					              r.events[0].applied_ns) /
					                     1e6,
					             "ms", keys);
				if (e == 2 && r.events[1].empty_ns >= 0)
					bench_report(
					        "elastic_sim_drain_ms",
					        (r.events[1].empty_ns - r.events[1].applied_ns) /
					                1e6,
					        "ms", keys);
				snprintf(keys, sizeof(keys), "machine=%s policy=%s events=%s",
				         machines[mi], policies[p], label[e]);
				bench_report("elastic_sim_makespan_ms", r.makespan_ns / 1e6, "ms",
				             keys);
				sim_result_free(&r);
				sim_result_free_events(&r);
			}
		machine_free(&m);
	}
	wl_free(&w);
	return failed;
}

int main(void)
{
	int failed = 0;

	log_set_level(LOG_WARN);
	for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
		const struct cell *c = &cells[i];
		static struct machine m;
		struct es_result r[2];
		char path[128], err[512], keys[160];
		double first[2];

		machine_init(&m);
		snprintf(path, sizeof(path), "machines/%s.toml", c->machine);
		if (machine_load(path, &m, err, sizeof(err))) {
			fprintf(stderr, "bench_elastic_sim: %s\n", err);
			failed = 1;
			continue;
		}
		if (run_mode(&m, c, false, &r[0]) || run_mode(&m, c, true, &r[1])) {
			machine_free(&m);
			failed = 1;
			continue;
		}
		for (int k = 0; k < 2; k++) {
			const struct es_event_result *x = &r[k].ev[0];
			snprintf(keys, sizeof(keys), "machine=%s model=%s mode=%s", c->machine,
			         c->model, k ? "restart" : "live");
			first[k] = x->first_token_ns > 0
			                   ? (x->first_token_ns - ADD_AT_S * 1e9) / 1e6
			                   : -1;
			bench_report("elastic_sim_first_token_ms", first[k], "ms", keys);
			bench_report("elastic_sim_throughput_dip",
			             x->tok_s_before > 0 ? x->tok_s_during / x->tok_s_before : 0,
			             "ratio", keys);
			bench_report("elastic_sim_throughput_gain",
			             x->tok_s_before > 0 ? x->tok_s_after / x->tok_s_before : 0,
			             "ratio", keys);
			bench_report("elastic_sim_bytes_over_min",
			             x->min_bytes > 0 ? x->bytes / x->min_bytes : 1, "ratio", keys);
			bench_report("elastic_sim_reprefill_tokens", x->reprefill_tokens, "tokens",
			             keys);
		}
		snprintf(keys, sizeof(keys), "machine=%s model=%s", c->machine, c->model);
		if (first[0] > 0 && first[1] > 0)
			bench_report("elastic_sim_restart_over_live", first[1] / first[0], "ratio",
			             keys);
		es_result_free(&r[0]);
		es_result_free(&r[1]);
		machine_free(&m);
	}
	return failed | engine_cells();
}
