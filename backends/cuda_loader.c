/* Loads the CUDA backend from its plugin, tandem-cuda.so, so that the daemon
 * neither links CUDA nor needs it installed: without the plugin, or without
 * the CUDA libraries it needs, there is simply no CUDA backend and a one-line
 * reason says why. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"

#define CUDA_PLUGIN_FILE "tandem-cuda.so"
#define CUDA_PLUGIN_ENTRY BACKEND_CUDA_ENTRY
#define CUDA_PLUGIN_ENV "TANDEM_CUDA_PLUGIN"

typedef backend_cuda_entry_fn *cuda_entry_fn;

/* The one piece of process-wide state outside the daemon's context: a dlopen
 * handle belongs to the process (the library is mapped once, whoever opens
 * it), so the loader keeps it here and gives every caller the same ops. */
static struct {
	pthread_mutex_t lock;
	void *handle;
	const struct backend_ops *ops;
} plugin = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void set_note(char *note, size_t notelen, const char *fmt, ...)
{
	va_list ap;

	if (!note || notelen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(note, notelen, fmt, ap);
	va_end(ap);
	note[strcspn(note, "\n")] = '\0'; /* one line, even from dlerror */
}

/* Where the plugin lies relative to the directory of the running program:
 * next to build/bin as `make` puts it, and in <libdir>/tandem/ as `make
 * install` puts it (tandemd in <prefix>/sbin, libdir <prefix>/lib). */
static const char *const plugin_dirs[] = { "../lib", "../lib/tandem" };

/* The i-th default path; -1 when there is none. */
static int default_path(size_t i, char *buf, size_t len)
{
	char exe[PATH_MAX];
	ssize_t r = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (r <= 0)
		return -1;
	exe[r] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	int w = snprintf(buf, len, "%s/%s/%s", exe, plugin_dirs[i], CUDA_PLUGIN_FILE);
	return w > 0 && (size_t)w < len ? 0 : -1;
}

/* A default plugin that exists, else $TANDEM_CUDA_PLUGIN; NULL with a note
 * if neither. */
static const char *find_plugin(char *buf, size_t len, char *note, size_t notelen)
{
	int have_default = 0;

	for (size_t i = 0; i < sizeof(plugin_dirs) / sizeof(plugin_dirs[0]); i++) {
		if (default_path(i, buf, len) != 0)
			continue;
		have_default = 1;
		if (access(buf, F_OK) == 0)
			return buf;
	}
	const char *env = getenv(CUDA_PLUGIN_ENV);
	if (env && *env)
		return env;
	set_note(note, notelen, "CUDA plugin not built (no %s, %s unset)",
	         have_default ? buf : CUDA_PLUGIN_FILE, CUDA_PLUGIN_ENV);
	return NULL;
}

/* RTLD_NODELETE: the CUDA runtime inside the plugin registers exit handlers
 * and driver callbacks that must stay mapped until the process ends, so an
 * unload only forgets the handle. */
static const struct backend_ops *open_plugin(const char *path, char *note, size_t notelen)
{
	if (strchr(path, '/') && access(path, F_OK) != 0) {
		set_note(note, notelen, "CUDA plugin not found: %s", path);
		return NULL;
	}
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (!h) {
		const char *why = dlerror();
		set_note(note, notelen, "CUDA plugin not loadable: %s", why ? why : path);
		return NULL;
	}
	cuda_entry_fn entry;
	void *sym = dlsym(h, CUDA_PLUGIN_ENTRY);
	memcpy(&entry, &sym, sizeof(entry)); /* object to function pointer, as POSIX allows */
	const struct backend_ops *ops = entry ? entry() : NULL;
	if (!ops) {
		set_note(note, notelen, "CUDA plugin %s: no %s", path, CUDA_PLUGIN_ENTRY);
		dlclose(h);
		return NULL;
	}
	/* Before anything else of ops: only abi_version is where every
	 * version of the seam keeps it. */
	if (ops->abi_version != BACKEND_ABI_VERSION) {
		set_note(note, notelen,
		         "CUDA plugin %s: backend ABI version %u, tandemd speaks %u: refused "
		         "(rebuild "
		         "the plugin with this tandemd)",
		         path, ops->abi_version, BACKEND_ABI_VERSION);
		dlclose(h);
		return NULL;
	}
	plugin.handle = h;
	plugin.ops = ops;
	return ops;
}

/* Once loaded, later calls return the same ops, whatever path they name. */
const struct backend_ops *backend_cuda_load(const char *plugin_path, char *note, size_t notelen)
{
	char buf[PATH_MAX];
	const struct backend_ops *ops = NULL;

	set_note(note, notelen, "%s", "");
	pthread_mutex_lock(&plugin.lock);
	if (plugin.ops) {
		ops = plugin.ops;
	} else {
		const char *path =
		        plugin_path ? plugin_path : find_plugin(buf, sizeof(buf), note, notelen);
		if (path)
			ops = open_plugin(path, note, notelen);
	}
	pthread_mutex_unlock(&plugin.lock);
	return ops;
}

/* Every device of the backend must have been released. */
void backend_cuda_unload(void)
{
	pthread_mutex_lock(&plugin.lock);
	if (plugin.handle)
		dlclose(plugin.handle);
	plugin.handle = NULL;
	plugin.ops = NULL;
	pthread_mutex_unlock(&plugin.lock);
}
