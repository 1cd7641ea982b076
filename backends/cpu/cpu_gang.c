/* The CPU gang (cpu_gang.h): idle cores' helper threads join a kernel's
 * job item by item.
 *
 * One lock guards the slots, the open jobs and the helpers' comings and
 * goings; items are claimed with an atomic counter, outside it. A job lives
 * on its poster's stack: the poster unlinks it once every item is claimed
 * and waits until no helper is inside before it returns. */
#include "backends/cpu/cpu_gang.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct cpu_gang_slot {
	cpu_set_t cpus;
	bool bound; /* cpus is set */
	_Atomic int busy; /* the core's worker runs a kernel */
	/* Under the lock: */
	bool started, failed, stop;
	pthread_t thread;
	struct cpu_gang_slot *next;
};

struct gang_job {
	int (*fn)(void *ctx, size_t item);
	void *ctx;
	size_t nitems;
	_Atomic size_t next; /* the next item to claim */
	_Atomic int err; /* the first error */
	/* Under the lock: */
	unsigned helpers; /* inside now */
	unsigned room; /* helpers that may still join */
	struct gang_job *next_job;
};

unsigned cpu_gang_max_threads = 0;
uint64_t cpu_gang_min_bytes = UINT64_C(1) << 20;

static pthread_mutex_t gang_lock = PTHREAD_MUTEX_INITIALIZER;
/* Helpers wait on wake (a job posted, a core left its kernel, stop);
 * posters on left (a helper left their job). */
static pthread_cond_t gang_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t gang_left = PTHREAD_COND_INITIALIZER;
static struct cpu_gang_slot *slots;
static size_t nslots;
static struct gang_job *jobs;
static _Atomic unsigned open_jobs;
static _Atomic uint64_t helper_items;
/* The slot whose kernel this thread runs (between enter and leave). */
static _Thread_local struct cpu_gang_slot *current;

struct cpu_gang_slot *cpu_gang_slot_add(const cpu_set_t *cpus)
{
	struct cpu_gang_slot *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	if (cpus) {
		s->cpus = *cpus;
		s->bound = true;
	}
	pthread_mutex_lock(&gang_lock);
	s->next = slots;
	slots = s;
	nslots++;
	pthread_mutex_unlock(&gang_lock);
	return s;
}

void cpu_gang_slot_remove(struct cpu_gang_slot *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&gang_lock);
	s->stop = true;
	pthread_cond_broadcast(&gang_wake);
	bool started = s->started;
	pthread_mutex_unlock(&gang_lock);
	/* A helper inside another core's job finishes its item first. */
	if (started)
		pthread_join(s->thread, NULL);
	pthread_mutex_lock(&gang_lock);
	for (struct cpu_gang_slot **p = &slots; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			nslots--;
			break;
		}
	}
	pthread_mutex_unlock(&gang_lock);
	free(s);
}

bool cpu_gang_slot_busy(const struct cpu_gang_slot *s)
{
	return atomic_load_explicit(&s->busy, memory_order_relaxed) != 0;
}

uint64_t cpu_gang_helper_items(void)
{
	return atomic_load_explicit(&helper_items, memory_order_relaxed);
}

void cpu_gang_enter(struct cpu_gang_slot *s)
{
	atomic_store_explicit(&s->busy, 1, memory_order_relaxed);
	current = s;
}

void cpu_gang_leave(struct cpu_gang_slot *s)
{
	current = NULL;
	atomic_store_explicit(&s->busy, 0, memory_order_relaxed);
	/* The core is free again: its helper may join a job still open. */
	if (atomic_load_explicit(&open_jobs, memory_order_relaxed)) {
		pthread_mutex_lock(&gang_lock);
		pthread_cond_broadcast(&gang_wake);
		pthread_mutex_unlock(&gang_lock);
	}
}

/* Claims and runs items until none is left or, for a helper, until its
 * core's worker starts a kernel. Returns how many it ran. */
static size_t run_items(struct gang_job *j, const struct cpu_gang_slot *helper)
{
	size_t n = 0;
	for (;;) {
		if (helper && atomic_load_explicit(&helper->busy, memory_order_relaxed))
			break;
		size_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->nitems)
			break;
		int err = j->fn(j->ctx, i);
		n++;
		if (err) {
			int none = 0;
			atomic_compare_exchange_strong(&j->err, &none, err);
			atomic_store(&j->next, j->nitems); /* skip the rest */
		}
	}
	return n;
}

/* An open job with items left that a helper may join; NULL: none. Lock
 * held. */
static struct gang_job *joinable_locked(void)
{
	for (struct gang_job *j = jobs; j; j = j->next_job)
		if (j->room && atomic_load(&j->next) < j->nitems)
			return j;
	return NULL;
}

static void *helper_main(void *arg)
{
	struct cpu_gang_slot *s = arg;

	pthread_mutex_lock(&gang_lock);
	while (!s->stop) {
		struct gang_job *j = cpu_gang_slot_busy(s) ? NULL : joinable_locked();
		if (!j) {
			pthread_cond_wait(&gang_wake, &gang_lock);
			continue;
		}
		j->room--;
		j->helpers++;
		pthread_mutex_unlock(&gang_lock);
		size_t n = run_items(j, s);
		atomic_fetch_add_explicit(&helper_items, n, memory_order_relaxed);
		pthread_mutex_lock(&gang_lock);
		j->room++;
		if (--j->helpers == 0)
			pthread_cond_broadcast(&gang_left);
	}
	pthread_mutex_unlock(&gang_lock);
	return NULL;
}

/* Helpers start with the first job, bound to their core. One that cannot
 * start is not tried again: the gang does with fewer. Lock held. */
static void start_helpers_locked(void)
{
	for (struct cpu_gang_slot *s = slots; s; s = s->next) {
		if (s->started || s->failed || s->stop)
			continue;
		pthread_attr_t attr;
		if (pthread_attr_init(&attr) != 0) {
			s->failed = true;
			continue;
		}
		if (s->bound)
			pthread_attr_setaffinity_np(&attr, sizeof(s->cpus), &s->cpus);
		s->started = pthread_create(&s->thread, &attr, helper_main, s) == 0;
		s->failed = !s->started;
		pthread_attr_destroy(&attr);
	}
}

int cpu_gang_run(size_t nitems, int (*fn)(void *ctx, size_t item), void *ctx, bool want_helpers)
{
	struct gang_job j = { .fn = fn, .ctx = ctx, .nitems = nitems };
	unsigned max = cpu_gang_max_threads;
	bool gang = want_helpers && current && nitems > 1 && max != 1;

	if (gang) {
		pthread_mutex_lock(&gang_lock);
		gang = nslots > 1;
		if (gang) {
			start_helpers_locked();
			size_t room = nitems - 1;
			if (max && max - 1 < room)
				room = max - 1;
			j.room = room < UINT_MAX ? (unsigned)room : UINT_MAX;
			j.next_job = jobs;
			jobs = &j;
			atomic_fetch_add(&open_jobs, 1);
			pthread_cond_broadcast(&gang_wake);
		}
		pthread_mutex_unlock(&gang_lock);
	}
	run_items(&j, NULL);
	if (gang) {
		pthread_mutex_lock(&gang_lock);
		for (struct gang_job **p = &jobs; *p; p = &(*p)->next_job) {
			if (*p == &j) {
				*p = j.next_job;
				break;
			}
		}
		atomic_fetch_sub(&open_jobs, 1);
		while (j.helpers)
			pthread_cond_wait(&gang_left, &gang_lock);
		pthread_mutex_unlock(&gang_lock);
	}
	return atomic_load(&j.err);
}
