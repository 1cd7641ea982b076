/* The backends the daemon may probe, in the manner of hwloc's discovery
 * components: a name, a priority and whether it is enabled by default. The
 * daemon walks them in priority order instead of naming each backend. */
#include <stdio.h>
#include <string.h>

#include "backends/backend.h"
#include "tandem.h"

static const struct backend_component components[] = {
	{ .name = "cpu", .priority = 30, .enabled_by_default = true, .ops = &backend_cpu },
	{ .name = "cuda",
	  .priority = 20,
	  .enabled_by_default = true,
	  .load = backend_cuda_load,
	  .unload = backend_cuda_unload },
	{ .name = "opencl",
	  .priority = 10,
	  .enabled_by_default = true,
	  .yields_same_pci = true,
	  .ops = &backend_opencl },
};

#define NCOMPONENTS (sizeof(components) / sizeof(components[0]))

int backend_check(const struct backend_ops *ops, char *why, size_t whylen)
{
	if (ops && ops->abi_version == BACKEND_ABI_VERSION)
		return 0;
	if (why && whylen) {
		if (!ops)
			snprintf(why, whylen, "no backend");
		else
			/* The name may not be where this version keeps it. */
			snprintf(why, whylen, "backend ABI version %u, tandemd speaks %u: refused",
			         ops->abi_version, BACKEND_ABI_VERSION);
	}
	return -TDM_EINVAL;
}

static bool before(const struct backend_component *a, const struct backend_component *b)
{
	return a->priority != b->priority ? a->priority > b->priority
	                                  : strcmp(a->name, b->name) < 0;
}

size_t backend_registry(const struct backend_component **out, size_t max)
{
	const struct backend_component *all[NCOMPONENTS];
	/* Insertion by priority: a handful of components. */
	for (size_t i = 0; i < NCOMPONENTS; i++) {
		size_t j = i;
		for (; j > 0 && before(&components[i], all[j - 1]); j--)
			all[j] = all[j - 1];
		all[j] = &components[i];
	}
	for (size_t i = 0; i < NCOMPONENTS && i < max; i++)
		out[i] = all[i];
	return NCOMPONENTS;
}

void backend_registry_unload(void)
{
	for (size_t i = 0; i < NCOMPONENTS; i++)
		if (components[i].unload)
			components[i].unload();
}

const struct backend_ops *backend_component_ops(const struct backend_component *c,
                                                const char *plugin_path, char *note, size_t notelen)
{
	char why[BACKEND_NOTE_MAX];
	if (note && notelen)
		note[0] = '\0';
	const struct backend_ops *ops = c->ops ? c->ops : c->load(plugin_path, note, notelen);
	if (!ops)
		return NULL;
	if (backend_check(ops, why, sizeof(why)) != 0) {
		if (note && notelen)
			snprintf(note, notelen, "%s", why);
		return NULL;
	}
	return ops;
}
