/* Weighted shares through the whole dispatch core (dmda: per-device fair
 * queues, tasks committed to a device when they become ready), in a
 * discrete-event run on two host cores: two clients with weights 1:2
 * that always have ready tasks waiting get device time 1:2 within 10%;
 * over a window in which the heavier one also idles between its steps
 * (a closed-loop client's serial stretches), its share of the window is
 * lower while its share of the time both were backlogged stays 1:2 —
 * which is the share weighted fair queueing promises (docs/llm.md, "Two
 * clients"); and shares hold in measured time when the cost models'
 * predictions err. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/kernels.h"
#include "placement/residency.h"
#include "policies/policy.h"
#include "profiler/calibrate.h"
#include "profiler/profiler.h"

enum { NDEV = 2, NFLOW = 2, POOL = 4096, READY = 6 };
#define COST_NS 1000.0

struct client {
	struct engine_flow flow;
	struct engine_graph g;
	uint32_t next; /* next unused task of the pool */
	uint32_t ready; /* tasks released, not yet done */
	uint64_t busy_ns, busy_both_ns;
	/* Steps of `step` tasks (0: one endless step), READY of them ready
	 * at a time; between steps a serial stretch of idle_ns with nothing
	 * ready. */
	uint32_t step, left;
	bool idle;
	double idle_until;
};

struct sim {
	const struct policy_ops *pol;
	void *priv;
	struct residency res;
	struct profiler *prof;
	struct engine_device devs[NDEV];
	struct client c[NFLOW];
	double now;
	double idle_ns;
	double run_ns[NFLOW]; /* what each client's tasks take (predicted: COST_NS) */
};

static void release(struct sim *s, struct client *c, uint32_t n)
{
	struct engine_task *ts[READY];
	for (uint32_t i = 0; i < n; i++) {
		struct engine_task *t = &c->g.tasks[c->next++ % POOL];
		memset(t, 0, sizeof(*t));
		t->graph = &c->g;
		t->index = (uint32_t)(t - c->g.tasks);
		t->kernel = kernel_by_id((uint32_t)kernel_lookup("noop"));
		t->queued_ns = (uint64_t)s->now;
		ts[i] = t;
	}
	c->ready += n;
	s->pol->tasks_ready(s->priv, ts, n, -1);
}

static void sim_init(struct sim *s, const uint32_t *weights, uint32_t heavy_step, double idle_ns)
{
	memset(s, 0, sizeof(*s));
	residency_init(&s->res);
	struct calibration cal;
	calibrate_defaults(NDEV, NDEV, &cal);
	assert_int_equal(profiler_create(&cal, &s->prof), 0);
	/* The cost models know what a task takes: the shares are by time. */
	for (uint32_t d = 0; d < NDEV; d++)
		for (int i = 0; i < 50; i++)
			profiler_observe(s->prof, (uint32_t)kernel_lookup("noop"), d,
			                 &(struct kernel_features){ 0 }, (uint64_t)COST_NS);
	for (int i = 0; i < NDEV; i++) {
		s->devs[i].index = (uint16_t)i;
		s->devs[i].dev.kind = TDM_DEV_CPU;
	}
	s->pol = policy_by_name("dmda");
	assert_non_null(s->pol);
	struct policy_params p = { .nworkers = NDEV,
		                   .devices = s->devs,
		                   .prof = s->prof,
		                   .res = &s->res,
		                   .tuning = &policy_tuning_defaults };
	assert_int_equal(s->pol->init(&p, &s->priv), 0);
	s->idle_ns = idle_ns;
	s->run_ns[0] = s->run_ns[1] = COST_NS;
	for (int f = 0; f < NFLOW; f++) {
		struct client *c = &s->c[f];
		c->flow.id = (uint32_t)f + 1;
		c->flow.weight = weights[f];
		assert_int_equal(s->pol->flow_added(s->priv, &c->flow), 0);
		c->g.flow = &c->flow;
		c->g.tasks = calloc(POOL, sizeof(*c->g.tasks));
		c->g.ntasks = POOL;
		c->step = f == 1 ? heavy_step : 0;
		c->left = c->step ? c->step - READY : 0;
		s->pol->graph_submitted(s->priv, &c->g);
		release(s, c, READY);
	}
}

static void sim_fini(struct sim *s)
{
	for (int f = 0; f < NFLOW; f++) {
		s->pol->flow_gone(s->priv, &s->c[f].flow);
		free(s->c[f].g.tasks);
	}
	s->pol->fini(s->priv);
	profiler_destroy(s->prof);
	residency_fini(&s->res);
}

/* Runs `tasks` task completions; each device takes its next task when it
 * frees (time advances to the earliest completion). */
static void sim_run(struct sim *s, uint32_t tasks)
{
	struct engine_task *run[NDEV] = { 0 };
	double end[NDEV] = { 0 };

	for (uint32_t done = 0; done < tasks;) {
		for (unsigned w = 0; w < NDEV; w++)
			if (!run[w] && (run[w] = s->pol->pick_next(s->priv, w))) {
				run[w]->start_ns = (uint64_t)s->now;
				end[w] = s->now + s->run_ns[run[w]->graph->flow->id - 1];
			}
		/* The next event: a completion, or an idle client coming back. */
		double next = 1e300;
		int who = -1;
		for (unsigned w = 0; w < NDEV; w++)
			if (run[w] && end[w] < next)
				next = end[w], who = (int)w;
		for (int f = 0; f < NFLOW; f++)
			if (s->c[f].idle && s->c[f].idle_until <= next)
				next = s->c[f].idle_until, who = -2 - f;
		assert_true(who != -1);
		double dt = next - s->now;
		/* Both backlogged: each has a task released and not yet
		 * running, or running (its tasks wait only on a device). */
		bool both = s->c[0].ready > 0 && s->c[1].ready > 0;
		for (unsigned w = 0; w < NDEV; w++)
			if (run[w]) {
				struct client *c = &s->c[run[w]->graph->flow->id - 1];
				double part = fmin(dt, end[w] - s->now);
				c->busy_ns += (uint64_t)part;
				if (both)
					c->busy_both_ns += (uint64_t)part;
			}
		s->now = next;
		if (who <= -2) { /* the next step */
			struct client *c = &s->c[-2 - who];
			c->idle = false;
			c->left = c->step - READY;
			release(s, c, READY);
			continue;
		}
		struct engine_task *t = run[who];
		run[who] = NULL;
		t->end_ns = (uint64_t)s->now;
		s->pol->task_done(s->priv, t, (unsigned)who);
		struct client *c = &s->c[t->graph->flow->id - 1];
		c->ready--;
		done++;
		if (!c->step) {
			release(s, c, 1);
		} else if (c->left) {
			c->left--;
			release(s, c, 1);
		} else if (!c->ready) { /* the step's last task: a serial stretch */
			c->idle = true;
			c->idle_until = s->now + s->idle_ns;
		}
	}
}

static void test_backlogged_share(void **state)
{
	(void)state;
	struct sim s;
	const uint32_t w[NFLOW] = { 1, 2 };
	sim_init(&s, w, 0, 0);
	sim_run(&s, 30000);
	double ratio = (double)s.c[1].busy_ns / (double)s.c[0].busy_ns;
	printf("# always backlogged: weight-2 / weight-1 device time %.3f\n", ratio);
	assert_true(ratio > 1.8 && ratio < 2.2);
	sim_fini(&s);
}

static void test_serial_stretches(void **state)
{
	(void)state;
	struct sim s;
	const uint32_t w[NFLOW] = { 1, 2 };
	/* The heavy client idles 20 task-times after every step of 24. */
	sim_init(&s, w, 24, 20 * COST_NS);
	sim_run(&s, 30000);
	double window = (double)s.c[1].busy_ns / (double)s.c[0].busy_ns;
	double both = (double)s.c[1].busy_both_ns / (double)s.c[0].busy_both_ns;
	printf("# serial stretches: over the window %.3f, while both backlogged %.3f\n", window,
	       both);
	assert_true(window < 1.8); /* idle time is not made up for */
	assert_true(both > 1.8 && both < 2.2);
	sim_fini(&s);
}

/* The cost models err: the heavier client's tasks take 1.5 times what is
 * predicted. Shares are settled in measured time: still 1:2. */
static void test_measured_not_predicted(void **state)
{
	(void)state;
	struct sim s;
	const uint32_t w[NFLOW] = { 1, 2 };
	sim_init(&s, w, 0, 0);
	s.run_ns[1] = 1.5 * COST_NS;
	sim_run(&s, 30000);
	double ratio = (double)s.c[1].busy_ns / (double)s.c[0].busy_ns;
	printf("# predictions off by 1.5 for weight 2: device time %.3f\n", ratio);
	assert_true(ratio > 1.8 && ratio < 2.2);
	sim_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backlogged_share),
		cmocka_unit_test(test_serial_stretches),
		cmocka_unit_test(test_measured_not_predicted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
