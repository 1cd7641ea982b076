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
 * Simulated time: deterministic, no wall clock. */
#include <stdio.h>
#include <string.h>

#include "bench_util.h"
#include "sim/elastic.h"
#include "sim/machine.h"
#include "workload/scale_events.h"

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

int main(void)
{
	int failed = 0;

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
	return failed;
}
