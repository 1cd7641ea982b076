/* Scale events of a simulated run (docs/elastic-sim.md): at a virtual time,
 * a device is added, drained, resumed or removed, or an accelerator's
 * memory budget changes. `tandemd --simulate --events SPEC`:
 *
 *   t=5ms add gpu1; t=12ms drain gpu0; t=20ms remove cpu3
 *   t=30ms budget gpu0=8GiB      # one event a line, or ';' between them
 *
 * TIME is a decimal number with a unit (ns, us, ms, s); a budget is a
 * number with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB). '#' starts a
 * comment to the end of its line. The text is untrusted: every token is
 * checked and an error names the event (its position in the text) and
 * the column. Here only the syntax is checked; whether each event makes
 * sense on a machine (the device exists, an "add" names a device that is
 * absent then) is sim_events_check's (sim/elastic.h). */
#ifndef TDM_WORKLOAD_SCALE_EVENTS_H
#define TDM_WORKLOAD_SCALE_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define SCALE_MAX_EVENTS 1024u
#define SCALE_MAX_INPUT ((size_t)64 << 10)
#define SCALE_DEV_MAX 32 /* a device name: 1 to 31 of a-z, 0-9, _ */
#define SCALE_MAX_T_NS 1e15 /* about 11.6 days of virtual time */
#define SCALE_MAX_BYTES ((uint64_t)1 << 50)

enum scale_kind {
	SCALE_ADD = 0, /* an absent device joins */
	SCALE_DRAIN, /* nothing new is placed on it; what it holds finishes */
	SCALE_REMOVE, /* it leaves; what ran there runs again elsewhere */
	SCALE_RESUME, /* a draining device takes work again */
	SCALE_BUDGET, /* an accelerator's memory budget becomes `bytes` */
	SCALE_KIND_COUNT
};

struct scale_event {
	uint64_t t_ns;
	enum scale_kind kind;
	char dev[SCALE_DEV_MAX];
	uint64_t bytes; /* SCALE_BUDGET: > 0 */
	uint32_t index; /* its position in the text (0-based), for messages */
};

struct scale_events {
	struct scale_event *ev; /* by time; events of one time in text order */
	uint32_t n;
};

const char *scale_kind_name(enum scale_kind k);

/* Parses text[0, len) into *out (output only; free with scale_events_free).
 * name starts each message ("--events", a file's path). 0, -TDM_EINVAL
 * with a one-line reason in err ("NAME: event 3 (column 9): ..."), or
 * -TDM_ENOMEM. An empty text is 0 events. */
int scale_events_parse(const char *text, size_t len, const char *name, struct scale_events *out,
                       char *err, size_t errlen);
void scale_events_free(struct scale_events *s);

/* One event as text that parses back to the same event, each figure in
 * the largest unit that holds it exactly ("t=5ms add gpu1", "t=0ns budget
 * gpu0=8GiB", "t=1500us drain gpu0"). The length written, as snprintf. */
int scale_event_format(const struct scale_event *e, char *buf, size_t len);

#endif
