/* Scale events against a machine (elastic.h): the checks every simulator
 * of events shares, and --events' text. */
#include "sim/elastic.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errbuf.h"
#include "tandem.h"

static const char *const state_name[] = { "absent", "active", "draining", "gone" };

int sim_events_check(const struct machine *m, const struct scale_events *ev,
                     enum sim_dev_state *state_out, char *err, size_t errlen)
{
	enum sim_dev_state st[MACHINE_MAX_DEVICES];
	uint32_t active = 0;

	for (uint32_t d = 0; d < m->ndevices; d++) {
		st[d] = m->dev[d].absent ? SIM_DEV_ABSENT : SIM_DEV_ACTIVE;
		active += st[d] == SIM_DEV_ACTIVE;
	}
	for (uint32_t i = 0; i < ev->n; i++) {
		const struct scale_event *e = &ev->ev[i];
		uint32_t d = 0;
		char at[128], txt[96];

		scale_event_format(e, txt, sizeof(txt));
		snprintf(at, sizeof(at), "event %u (%s)", e->index + 1, txt);
		while (d < m->ndevices && strcmp(m->dev[d].name, e->dev))
			d++;
		if (d == m->ndevices) {
			err_printf(err, errlen, "events: %s: %s has no device %s", at, m->name,
			           e->dev);
			return -TDM_EINVAL;
		}
		enum sim_dev_state s = st[d], want = s;
		const char *why = NULL;
		switch (e->kind) {
		case SCALE_ADD:
			if (s == SIM_DEV_ABSENT)
				want = SIM_DEV_ACTIVE;
			else if (s == SIM_DEV_GONE)
				why = "it was removed, and a removed device does not come back "
				      "(ids "
				      "are never reused): describe another device with present = "
				      "false";
			else if (!m->dev[d].absent)
				why = "it is present from the start: only a device described with "
				      "present = false can be added";
			else
				why = "it was added already";
			break;
		case SCALE_DRAIN:
			if (s == SIM_DEV_ACTIVE)
				want = SIM_DEV_DRAINING;
			else
				why = "only an active device can be drained";
			break;
		case SCALE_RESUME:
			if (s == SIM_DEV_DRAINING)
				want = SIM_DEV_ACTIVE;
			else
				why = "only a draining device can resume";
			break;
		case SCALE_REMOVE:
			if (s == SIM_DEV_ACTIVE || s == SIM_DEV_DRAINING)
				want = SIM_DEV_GONE;
			else
				why = "only a device that is there (active or draining) can be "
				      "removed";
			break;
		case SCALE_BUDGET:
			if (m->dev[d].node == 0)
				why = "a host core has no memory budget of its own: budgets are "
				      "for accelerators";
			else if (s != SIM_DEV_ACTIVE && s != SIM_DEV_DRAINING)
				why = "the device is not there";
			else if (e->bytes > m->dev[d].mem_bytes) {
				err_printf(err, errlen,
				           "events: %s: %" PRIu64 " bytes is more than %s's memory "
				           "(%" PRIu64 " bytes)",
				           at, e->bytes, e->dev, m->dev[d].mem_bytes);
				return -TDM_EINVAL;
			}
			break;
		case SCALE_KIND_COUNT: why = "unknown event"; break;
		}
		if (why) {
			err_printf(err, errlen, "events: %s: %s is %s: %s", at, e->dev,
			           state_name[s], why);
			return -TDM_EINVAL;
		}
		active -= s == SIM_DEV_ACTIVE;
		active += want == SIM_DEV_ACTIVE;
		st[d] = want;
		if (!active) {
			err_printf(err, errlen,
			           "events: %s: no device would be left active to run the work",
			           at);
			return -TDM_EINVAL;
		}
	}
	if (state_out)
		memcpy(state_out, st, m->ndevices * sizeof(*st));
	return 0;
}

int sim_events_text(const char *arg, char **text, size_t *len, char *err, size_t errlen)
{
	*text = NULL;
	*len = 0;
	if (arg[0] != '@') {
		size_t n = strlen(arg);
		if (n > SCALE_MAX_INPUT) {
			err_printf(err, errlen, "--events: %zu bytes, at most %zu", n,
			           SCALE_MAX_INPUT);
			return -1;
		}
		*text = malloc(n + 1);
		if (!*text) {
			err_printf(err, errlen, "--events: out of memory");
			return -1;
		}
		memcpy(*text, arg, n + 1);
		*len = n;
		return 0;
	}
	FILE *f = fopen(arg + 1, "rb");
	if (!f) {
		err_printf(err, errlen, "--events: %s: %s", arg + 1, strerror(errno));
		return -1;
	}
	char *buf = malloc(SCALE_MAX_INPUT + 1);
	size_t n = buf ? fread(buf, 1, SCALE_MAX_INPUT + 1, f) : 0;
	bool bad = !buf || ferror(f);
	fclose(f);
	if (bad || n > SCALE_MAX_INPUT) {
		err_printf(err, errlen, "--events: %s: %s", arg + 1,
		           bad ? "cannot be read" : "more than 64 KiB");
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return 0;
}

uint32_t sim_machine_in_engine_order(const struct machine *m, const struct scale_events *ev,
                                     struct machine *out, uint32_t *perm)
{
	uint32_t n = 0, present = 0, pos[MACHINE_MAX_DEVICES];
	bool placed[MACHINE_MAX_DEVICES] = { false };
	int node_map[MACHINE_MAX_NODES];

	for (uint32_t d = 0; d < m->ndevices; d++)
		if (!m->dev[d].absent) {
			perm[n++] = d;
			placed[d] = true;
		}
	present = n;
	for (uint32_t i = 0; ev && i < ev->n; i++) {
		if (ev->ev[i].kind != SCALE_ADD)
			continue;
		for (uint32_t d = 0; d < m->ndevices; d++)
			if (!placed[d] && !strcmp(m->dev[d].name, ev->ev[i].dev)) {
				perm[n++] = d;
				placed[d] = true;
			}
	}
	for (uint32_t d = 0; d < m->ndevices; d++)
		if (!placed[d])
			perm[n++] = d;
	for (uint32_t i = 0; i < n; i++)
		pos[perm[i]] = i;
	for (uint32_t k = 0; k < MACHINE_MAX_NODES; k++)
		node_map[k] = k == 0 ? 0 : -1;
	uint32_t nn = 1;
	for (uint32_t i = 0; i < n; i++) {
		uint16_t k = m->dev[perm[i]].node;
		if (node_map[k] < 0)
			node_map[k] = (int)nn++;
	}
	*out = *m;
	for (uint32_t i = 0; i < n; i++) {
		struct machine_device *d = &out->dev[i];
		*d = m->dev[perm[i]];
		d->node = (uint16_t)node_map[d->node];
		uint64_t sc = 0;
		for (uint32_t j = 0; j < m->ndevices; j++)
			if (m->dev[perm[i]].shares_cores >> j & 1)
				sc |= UINT64_C(1) << pos[j];
		d->shares_cores = sc;
	}
	for (uint32_t a = 0; a < m->nnodes; a++)
		for (uint32_t b = 0; b < m->nnodes; b++)
			if (node_map[a] >= 0 && node_map[b] >= 0)
				out->link[node_map[a]][node_map[b]] = m->link[a][b];
	return present;
}
