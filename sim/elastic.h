/* Scale events in simulation (docs/elastic-sim.md).
 *
 * sim_events_check: whether a list of scale events (workload/
 * scale_events.h) makes sense on a machine, event by event, with a
 * specific reason when it does not.
 *
 * es_run: LLM and MoE serving through scale events, analytically, with
 * the cost models of placement/llm_step.h and placement/moe_split.h, live
 * (the server keeps serving while a GPU joins, drains or leaves, and data
 * moves GPU to GPU where a peer link is faster than the host's) or by a
 * restart (stop, reconfigure, start again: the running requests lose their
 * KV and prefill again, the weights load again from host memory). */
#ifndef TDM_SIM_ELASTIC_H
#define TDM_SIM_ELASTIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/machine.h"
#include "workload/scale_events.h"

/* Device states along the events: absent (not yet added), active,
 * draining, gone. */
enum sim_dev_state { SIM_DEV_ABSENT = 0, SIM_DEV_ACTIVE, SIM_DEV_DRAINING, SIM_DEV_GONE };

/* Checks ev against m: every device named exists; "add" names a device
 * absent then (present = false, not added before: ids are never reused),
 * "drain" an active one, "resume" a draining one, "remove" an active or
 * draining one, "budget" an accelerator that is there, at most its memory;
 * and some device stays active after each event. 0, or -TDM_EINVAL with
 * "events: event N (t=...): reason" in err. state_out (may be NULL,
 * m->ndevices entries) gets each device's state after the last event. */
int sim_events_check(const struct machine *m, const struct scale_events *ev,
                     enum sim_dev_state *state_out, char *err, size_t errlen);

/* The machine as the engine simulation sees it (sim.c): its devices in
 * engine id order, the present ones first (file order), then the absent
 * ones in the order ev adds them (ids are given in order of addition),
 * then those never added; memory nodes renumbered in that order too, as
 * the residency appends them. out shares m's cost table (do not
 * machine_free it). perm[i]: out's device i is m's device perm[i]. Returns
 * the number of devices present at start. */
uint32_t sim_machine_in_engine_order(const struct machine *m, const struct scale_events *ev,
                                     struct machine *out, uint32_t *perm);

/* ---- serving through scale events ---- */

#define ES_MAX_GPUS 8

/* What a restart and a live add cost besides moving data, in ns. 0: the
 * default (docs/elastic-sim.md says where each comes from). */
struct es_consts {
	double proc_start_ns; /* tandemd stops and starts again (default 0.2 s) */
	double ctx_init_ns; /* a GPU's CUDA context and its memory pools (default 0.5 s) */
	double reconnect_ns; /* the serving clients reconnect and register (default 50 ms) */
	double prefill_chunk; /* prefill tokens a step when nothing decodes (default 2048) */
	double step_prefill; /* prefill tokens a step beside decoding (default MoE 128, LLM 512) */
};

struct es_opts {
	bool moe; /* a MoE model (mixtral-8x7b, dsv2-lite, qwen1.5-moe), else dense (llama2-7b, ...)
	           */
	const char *model;
	uint32_t batch; /* requests decoding at once (a closed loop: one ends, another starts) */
	uint32_t prompt, output; /* tokens of each request (0: 512, 256) */
	uint32_t max_batch; /* LLM: requests one GPU decodes at most (0: no limit); the others wait
	                     */
	double duration_ns; /* virtual time simulated (0: 10 s) */
	bool restart; /* each event is handled by stop + reconfigure + restart */
	double gpu_util; /* share of GPU memory the server uses (0: 0.9) */
	uint64_t seed;
	struct es_consts k;
	const struct scale_events *events; /* may be NULL */
};

struct es_event_result {
	struct scale_event ev;
	double applied_ns; /* the step boundary it took effect at */
	/* The new configuration is in place: live, the last copy it needs has
	 * arrived (a drain: the device is empty); restart, the server serves
	 * again. */
	double settled_ns;
	/* The first decode token after the event that the new configuration
	 * produced: for an add, the end of the first step in which the added
	 * GPU computed; for a restart, the first decode step after it. 0:
	 * none within the run. */
	double first_token_ns;
	double bytes; /* moved (or loaded again) for it */
	double min_bytes; /* what the new placement needs that was not where it wants it */
	double tok_s_before, tok_s_during, tok_s_after; /* decode tokens per second */
	uint32_t moved_requests; /* whose KV moved GPU to GPU */
	double reprefill_tokens; /* tokens prefilled again (lost KV) */
};

struct es_result {
	double time_ns, tokens, tok_s;
	uint64_t steps;
	double reprefill_tokens, bytes_moved;
	uint32_t gpus_at_end; /* active GPUs */
	uint32_t nevents;
	struct es_event_result *ev; /* malloc'd: es_result_free */
};

/* 0, or -TDM_EINVAL / -TDM_ENOMEM with a reason (unknown model, the
 * model does not fit, an event the serving model cannot follow, such as
 * the last GPU drained). Deterministic. */
int es_run(const struct machine *m, const struct es_opts *o, struct es_result *r, char *err,
           size_t errlen);
void es_result_free(struct es_result *r);

/* `tandemd --simulate -m MACHINE -w moe:...|llm:... --events SPEC
 * [--restart]`: SPEC as scale_events_parse takes it, or @FILE. Prints a
 * table or JSON; returns the exit status. */
int es_cli(const struct machine *m, bool moe, const char *spec, const char *events, bool restart,
           bool json);

/* `--events SPEC|@FILE` as text (malloc'd into *text): 0 or -1 with err. */
int sim_events_text(const char *arg, char **text, size_t *len, char *err, size_t errlen);

#endif
