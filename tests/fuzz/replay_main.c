/* Replays a fuzz corpus through a fuzz target without libFuzzer, so that
 * `make test` runs every committed input (under sanitizers in a sanitizer
 * build). Linked into build/tests/replay_X, never into the fuzzer itself.
 *
 *   replay_X [FILE|DIR]...
 *
 * Directories are walked recursively, in sorted order; names starting with
 * '.' are skipped. With no argument the corpus is $TDM_CORPUS_DIR/X if that
 * is a directory, else $TDM_CORPUS_DIR, else tests/fuzz/corpus/X (relative
 * to the current directory), where X is this program's name without
 * "replay_". An empty input is always run first.
 *
 * Prints a cmocka-style summary. A crash or sanitizer report ends the
 * process, which the test runner counts as a failure; an unreadable input
 * makes it exit 1.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

struct replay {
	unsigned long run;
	unsigned long failed; /* inputs that could not be read */
};

static void run_one(struct replay *r, const char *label, const uint8_t *data, size_t size)
{
	printf("[ RUN      ] %s\n", label);
	fflush(stdout); /* the last line says which input a crash came from */
	LLVMFuzzerTestOneInput(data, size);
	printf("[       OK ] %s\n", label);
	r->run++;
}

static void fail_input(struct replay *r, const char *path, const char *what, int err)
{
	printf("[  ERROR   ] %s: %s: %s\n", path, what, strerror(err));
	r->failed++;
}

static void run_file(struct replay *r, const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long size;

	if (!f) {
		fail_input(r, path, "cannot open", errno);
		return;
	}
	if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fail_input(r, path, "cannot seek", errno);
		fclose(f);
		return;
	}
	/* exactly size bytes, so that ASan sees any read past the input */
	buf = malloc(size ? (size_t)size : 1);
	if (!buf) {
		fail_input(r, path, "out of memory", ENOMEM);
		fclose(f);
		return;
	}
	if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
		fail_input(r, path, "cannot read", ferror(f) ? errno : EIO);
	} else {
		run_one(r, path, buf, (size_t)size);
	}
	free(buf);
	fclose(f);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_path(struct replay *r, const char *path);

static void run_dir(struct replay *r, const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		fail_input(r, path, "cannot open directory", errno);
		return;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **grown;

			cap = cap ? 2 * cap : 64;
			grown = realloc(names, cap * sizeof(*names));
			if (!grown) {
				fail_input(r, path, "out of memory", ENOMEM);
				break;
			}
			names = grown;
		}
		names[n] = strdup(e->d_name);
		if (!names[n]) {
			fail_input(r, path, "out of memory", ENOMEM);
			break;
		}
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), compare_names);
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(path) + strlen(names[i]) + 2;
		char *child = malloc(len);

		if (child) {
			snprintf(child, len, "%s/%s", path, names[i]);
			run_path(r, child);
			free(child);
		} else {
			fail_input(r, names[i], "out of memory", ENOMEM);
		}
		free(names[i]);
	}
	free(names);
}

static void run_path(struct replay *r, const char *path)
{
	struct stat st;

	if (stat(path, &st)) {
		fail_input(r, path, "cannot stat", errno);
		return;
	}
	if (S_ISDIR(st.st_mode))
		run_dir(r, path);
	else
		run_file(r, path);
}

static int is_dir(const char *path)
{
	struct stat st;

	return !stat(path, &st) && S_ISDIR(st.st_mode);
}

/* The corpus to use when no argument names one; see the top of the file. */
static void default_corpus(const char *argv0, char *out, size_t len)
{
	const char *env = getenv("TDM_CORPUS_DIR");
	const char *name = strrchr(argv0, '/');

	name = name ? name + 1 : argv0;
	if (!strncmp(name, "replay_", 7))
		name += 7;
	if (env && *env) {
		snprintf(out, len, "%s/%s", env, name);
		if (!is_dir(out))
			snprintf(out, len, "%s", env);
		return;
	}
	snprintf(out, len, "tests/fuzz/corpus/%s", name);
}

int main(int argc, char **argv)
{
	static const uint8_t empty[1];
	struct replay r = { 0, 0 };
	char corpus[4096];

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);

	run_one(&r, "(empty input)", empty, 0);
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			run_path(&r, argv[i]);
	} else {
		default_corpus(argv[0], corpus, sizeof(corpus));
		printf("corpus: %s\n", corpus);
		run_path(&r, corpus);
	}

	printf("[==========] %lu test(s) run.\n", r.run + r.failed);
	printf("[  PASSED  ] %lu test(s).\n", r.run);
	if (r.failed) {
		printf("[  FAILED  ] %lu test(s): inputs that could not be read.\n", r.failed);
		return 1;
	}
	return 0;
}
