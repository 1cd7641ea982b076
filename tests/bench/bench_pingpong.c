/* The floor for tandem's round trip: a bare shared-memory ping-pong between
 * two processes over one mmap'd shared page.
 *
 *   doorbell=block  the word is written, then an eventfd is rung; the waiter
 *                   sleeps in read(2) on its eventfd at once.
 *   doorbell=spin   the waiter spins on the shared word for up to SPIN_US
 *                   (pause, sched_yield now and then), then sets a "sleeping"
 *                   flag and sleeps on the eventfd; the notifier rings only
 *                   when it finds the flag set, so no wake-up is lost.
 *
 * core=same puts both processes on the first core, core=cross the parent on
 * the first and the child on the second, as bench_tandem pins client and
 * daemon.
 */
#include <stdalign.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "tests/bench/bench_util.h"

#define SPIN_US 50
#define WARMUP 500
#define ITERS 5000
#define SPIN_CHECK_EVERY 8 /* pauses between clock reads */
#define SPIN_YIELD_EVERY 16 /* pauses between sched_yield calls */

/* One direction: a word written by one side and a flag written by the other,
 * each on its own cache line, plus the eventfd that wakes the reader. */
struct chan {
	alignas(64) _Atomic uint32_t word;
	alignas(64) _Atomic uint32_t sleeping;
};

struct shared_page {
	struct chan ping; /* parent -> child */
	struct chan pong; /* child -> parent */
};

struct endpoint {
	struct chan *in, *out;
	int in_efd, out_efd;
	int spin; /* 0: block at once; 1: adaptive spinning */
};

static void efd_ring(int efd)
{
	uint64_t one = 1;

	while (write(efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void efd_drain(int efd)
{
	uint64_t v;

	while (read(efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

/* Spins until the word equals want (1) or spin_ns passed (0). */
static int spin_until(struct chan *ch, uint32_t want, uint64_t spin_ns)
{
	uint64_t deadline = bench_now_ns() + spin_ns;

	for (unsigned i = 1;; i++) {
		if (atomic_load_explicit(&ch->word, memory_order_acquire) == want)
			return 1;
		bench_cpu_relax();
		if (i % SPIN_CHECK_EVERY)
			continue;
		if (bench_now_ns() >= deadline)
			return 0;
		if (i % SPIN_YIELD_EVERY == 0)
			sched_yield();
	}
}

static void wait_spin(struct chan *ch, int efd, uint32_t want)
{
	if (spin_until(ch, want, SPIN_US * 1000u))
		return;
	/* Announce the sleep, then look once more (Dekker with the notifier). */
	atomic_store(&ch->sleeping, 1);
	if (atomic_load(&ch->word) == want) {
		/* Whoever clears the flag owns the doorbell: if the notifier
		 * did, its ring is on the way and must be consumed. */
		if (atomic_exchange(&ch->sleeping, 0) == 0)
			efd_drain(efd);
		return;
	}
	while (atomic_load_explicit(&ch->word, memory_order_acquire) != want)
		efd_drain(efd);
}

static void notify_spin(struct chan *ch, int efd, uint32_t val)
{
	atomic_store(&ch->word, val);
	if (atomic_load(&ch->sleeping) && atomic_exchange(&ch->sleeping, 0))
		efd_ring(efd);
}

static void wait_block(struct chan *ch, int efd, uint32_t want)
{
	while (atomic_load_explicit(&ch->word, memory_order_acquire) != want)
		efd_drain(efd);
}

static void notify_block(struct chan *ch, int efd, uint32_t val)
{
	atomic_store_explicit(&ch->word, val, memory_order_release);
	efd_ring(efd);
}

static void ep_wait(const struct endpoint *ep, uint32_t want)
{
	if (ep->spin)
		wait_spin(ep->in, ep->in_efd, want);
	else
		wait_block(ep->in, ep->in_efd, want);
}

static void ep_notify(const struct endpoint *ep, uint32_t val)
{
	if (ep->spin)
		notify_spin(ep->out, ep->out_efd, val);
	else
		notify_block(ep->out, ep->out_efd, val);
}

static void child_loop(const struct endpoint *ep, uint32_t total)
{
	for (uint32_t i = 1; i <= total; i++) {
		ep_wait(ep, i);
		ep_notify(ep, i);
	}
}

/* Runs the parent's side; samples[] receives ITERS round trips in ns. */
static void parent_loop(const struct endpoint *ep, uint64_t *samples)
{
	for (uint32_t i = 1; i <= WARMUP + ITERS; i++) {
		uint64_t t0 = bench_now_ns();

		ep_notify(ep, i);
		ep_wait(ep, i);
		if (i > WARMUP)
			samples[i - WARMUP - 1] = bench_now_ns() - t0;
	}
}

/* Forks the child and runs one case over a zeroed page and two eventfds
 * (efd[0] rings the child, efd[1] the parent). */
static int run_pair(struct shared_page *pg, const int efd[2], int parent_core, int child_core,
                    int spin, uint64_t *samples)
{
	const struct endpoint parent = { &pg->pong, &pg->ping, efd[1], efd[0], spin };
	const struct endpoint child = { &pg->ping, &pg->pong, efd[0], efd[1], spin };
	int status;
	pid_t pid;

	if (bench_pin(0, parent_core) != 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (bench_pin(0, child_core) != 0)
			_exit(1);
		child_loop(&child, WARMUP + ITERS);
		_exit(0);
	}
	parent_loop(&parent, samples);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

static int run_case(int parent_core, int child_core, int spin, uint64_t *samples)
{
	struct shared_page *pg;
	int efd[2], rc = -1;

	pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED)
		return -1;
	memset(pg, 0, sizeof(*pg));
	efd[0] = eventfd(0, EFD_CLOEXEC);
	efd[1] = eventfd(0, EFD_CLOEXEC);
	if (efd[0] >= 0 && efd[1] >= 0)
		rc = run_pair(pg, efd, parent_core, child_core, spin, samples);
	for (int i = 0; i < 2; i++) {
		if (efd[i] >= 0)
			close(efd[i]);
	}
	munmap(pg, sizeof(*pg));
	return rc;
}

int main(void)
{
	static uint64_t samples[ITERS];
	const char *cores[] = { "same", "cross" };
	const char *bells[] = { "block", "spin" };
	int first = bench_nth_core(0), second = bench_nth_core(1), failed = 0;

	for (int c = 0; c < 2; c++) {
		if (c == 1 && second < 0) {
			fprintf(stderr, "bench_pingpong: one core only, core=cross skipped\n");
			break;
		}
		for (int b = 0; b < 2; b++) {
			char keys[64];

			if (run_case(first, c ? second : first, b, samples) != 0) {
				fprintf(stderr, "bench_pingpong: core=%s doorbell=%s failed\n",
				        cores[c], bells[b]);
				failed = 1;
				continue;
			}
			snprintf(keys, sizeof(keys), "core=%s doorbell=%s", cores[c], bells[b]);
			bench_report_p50_p99("pingpong_floor", samples, ITERS, keys);
		}
	}
	return failed;
}
