/* Fuzz target: arbitrary bytes as scale events (workload/scale_events.h),
 * as `tandemd --simulate --events @FILE` reads them, then checked against
 * a small machine with a device absent at start (sim_events_check).
 *
 * Besides not crashing or leaking: a parse either fails with -TDM_EINVAL
 * (or -TDM_ENOMEM), a "fuzz: ..." message and no events, or succeeds with
 * every event within its bounds (sorted by time, a known action, a device
 * name of a-z, 0-9 and _, a budget of 1 byte to 2^50), each event written
 * back by scale_event_format parsing to the same event; and the machine
 * check either accepts them or says why in an "events: ..." message.
 */
#include <stdio.h>
#include <string.h>

#include "sim/elastic.h"
#include "tests/fuzz/fuzz_check.h"
#include "workload/scale_events.h"

static const char machine_text[] = "name = \"fuzz-m\"\n"
                                   "[device.cpu]\nkind = \"cpu\"\nmodel = \"c\"\ncount = 2\n"
                                   "gflops = 10\nmem_gbps = 10\nlaunch_ns = 1000\n"
                                   "[device.gpu0]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 1\n"
                                   "mem_gib = 16\ngflops = 1000\nmem_gbps = 300\n"
                                   "launch_ns = 5000\n"
                                   "[device.gpu1]\nkind = \"gpu\"\nmodel = \"g\"\nnode = 2\n"
                                   "present = false\nmem_gib = 16\ngflops = 1000\n"
                                   "mem_gbps = 300\nlaunch_ns = 5000\n"
                                   "[link.0-1]\ngbps = 12\nlatency_ns = 10000\n"
                                   "[link.0-2]\ngbps = 12\nlatency_ns = 10000\n";

static bool same(const struct scale_event *a, const struct scale_event *b)
{
	return a->t_ns == b->t_ns && a->kind == b->kind && !strcmp(a->dev, b->dev) &&
	       a->bytes == b->bytes;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct machine m;
	static bool have_m;
	struct scale_events ev, back;
	char err[512], text[128];
	int rc;

	if (!have_m) {
		CHECK(machine_parse(machine_text, sizeof(machine_text) - 1, "fuzz-m", &m, err,
		                    sizeof(err)) == 0);
		have_m = true;
	}
	memset(err, 'x', sizeof(err));
	rc = scale_events_parse((const char *)data, size, "fuzz", &ev, err, sizeof(err));
	if (rc) {
		CHECK_REJECTED(rc, err);
		CHECK(ev.n == 0 && !ev.ev);
		return 0;
	}
	CHECK(ev.n <= SCALE_MAX_EVENTS && (ev.n == 0 || ev.ev));
	for (uint32_t i = 0; i < ev.n; i++) {
		const struct scale_event *e = &ev.ev[i];
		size_t n = strnlen(e->dev, sizeof(e->dev));

		CHECK(n >= 1 && n < SCALE_DEV_MAX &&
		      strspn(e->dev, "abcdefghijklmnopqrstuvwxyz0123456789_") == n);
		CHECK((unsigned)e->kind < SCALE_KIND_COUNT);
		CHECK((double)e->t_ns <= SCALE_MAX_T_NS);
		CHECK(e->kind == SCALE_BUDGET ? e->bytes >= 1 && e->bytes <= SCALE_MAX_BYTES
		                              : e->bytes == 0);
		CHECK(e->index < ev.n);
		CHECK(i == 0 || ev.ev[i - 1].t_ns < e->t_ns ||
		      (ev.ev[i - 1].t_ns == e->t_ns && ev.ev[i - 1].index < e->index));
		int len = scale_event_format(e, text, sizeof(text));
		CHECK(len > 0 && (size_t)len < sizeof(text));
		CHECK(scale_events_parse(text, (size_t)len, "fuzz", &back, err, sizeof(err)) == 0);
		CHECK(back.n == 1 && same(&back.ev[0], e));
		scale_events_free(&back);
	}
	memset(err, 'x', sizeof(err));
	rc = sim_events_check(&m, &ev, NULL, err, sizeof(err));
	if (rc) {
		CHECK(rc == -TDM_EINVAL);
		CHECK(strnlen(err, sizeof(err)) < sizeof(err) && !strncmp(err, "events: ", 8));
	}
	scale_events_free(&ev);
	return 0;
}
