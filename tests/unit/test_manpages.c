/* The man pages cannot drift from the code: tandem.toml(5) documents every
 * key of the configuration schema, under its section, with whether it takes
 * effect on reload or restart, and nothing else; libtandem(3) names every
 * function that include/tandem.h declares. (tests/integration/install.sh
 * checks the options of --help against tandemd(8) and tandemctl(1), and
 * renders every page with groff -ww.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

#define MAX_ENTRIES 256

/* A documented key: "section.key" and the (reload)/(restart) it says. */
struct entry {
	char name[96];
	int reload; /* 1 reload, 0 restart, -1 neither said */
};

/* The file's text (malloc'd), or NULL with the test skipped. */
static char *read_source(const char *rel)
{
	const char *dir = getenv("TDM_SOURCE_DIR");
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir ? dir : ".", rel);
	FILE *f = fopen(path, "r");
	if (!f) {
		print_message("%s not found: run from the source tree or set TDM_SOURCE_DIR\n",
		              path);
		return NULL;
	}
	char *buf = malloc(1 << 20);
	assert_non_null(buf);
	size_t n = fread(buf, 1, (1 << 20) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* The keys of tandem.toml.5: ".SS [section]" opens a section, ".TP" then
 * ".B key" names a key, and "(reload)" or "(restart)" in its text says
 * when it takes effect. */
static size_t parse_keys(char *text, struct entry *out, size_t max)
{
	char section[48] = "";
	size_t n = 0;
	bool after_tp = false;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		if (!strncmp(line, ".SS [", 5)) {
			snprintf(section, sizeof(section), "%.*s", (int)strcspn(line + 5, "]"),
			         line + 5);
			after_tp = false;
		} else if (!strncmp(line, ".SH", 3)) {
			section[0] = '\0';
			after_tp = false;
		} else if (!strcmp(line, ".TP")) {
			after_tp = true;
		} else if (after_tp && section[0] && !strncmp(line, ".B ", 3) &&
		           !strchr(line + 3, ' ')) {
			assert_true(n < max);
			snprintf(out[n].name, sizeof(out[n].name), "%s.%s", section, line + 3);
			out[n++].reload = -1;
			after_tp = false;
		} else {
			after_tp = false;
			if (n && strstr(line, "(reload)"))
				out[n - 1].reload = 1;
			else if (n && strstr(line, "(restart)"))
				out[n - 1].reload = 0;
		}
	}
	return n;
}

static void test_toml_page_has_every_key(void **state)
{
	(void)state;
	char *text = read_source("docs/man/tandem.toml.5");
	if (!text)
		skip();
	static struct entry doc[MAX_ENTRIES];
	size_t ndoc = parse_keys(text, doc, MAX_ENTRIES);
	size_t nkeys = config_key_count();
	int missing = 0;

	for (size_t i = 0; i < nkeys; i++) {
		const char *section, *key;
		char name[96];
		int reload = config_key_info(i, &section, &key);
		snprintf(name, sizeof(name), "%s.%s", section, key);
		size_t j = 0;
		while (j < ndoc && strcmp(doc[j].name, name))
			j++;
		if (j == ndoc) {
			print_error("tandem.toml.5: %s is not documented\n", name);
			missing++;
		} else if (doc[j].reload != reload) {
			print_error("tandem.toml.5: %s says %s, the schema %s\n", name,
			            doc[j].reload < 0 ? "neither (reload) nor (restart)"
			            : doc[j].reload   ? "(reload)"
			                              : "(restart)",
			            reload ? "RELOAD" : "RESTART");
			missing++;
		}
	}
	/* Nothing documented that the schema does not have. */
	for (size_t j = 0; j < ndoc; j++) {
		bool found = false;
		for (size_t i = 0; i < nkeys && !found; i++) {
			const char *section, *key;
			char name[96];
			config_key_info(i, &section, &key);
			snprintf(name, sizeof(name), "%s.%s", section, key);
			found = !strcmp(doc[j].name, name);
		}
		if (!found) {
			print_error("tandem.toml.5: %s is not a key of the schema\n", doc[j].name);
			missing++;
		}
	}
	assert_int_equal(ndoc, nkeys);
	assert_int_equal(missing, 0);
	free(text);
}

/* Every function tandem.h declares ("tdm_name(" at the start of a
 * declaration's name) is named in libtandem.3 as "tdm_name". */
static void test_library_page_has_every_function(void **state)
{
	(void)state;
	char *header = read_source("include/tandem.h");
	char *page = read_source("docs/man/libtandem.3");
	if (!header || !page)
		skip();
	int functions = 0, missing = 0;
	for (char *line = strtok(header, "\n"); line; line = strtok(NULL, "\n")) {
		if (line[0] == ' ' || line[0] == '\t' || line[0] == '/' || line[0] == '#' ||
		    line[0] == '*')
			continue; /* comments, macros, members */
		char *p = strstr(line, "tdm_");
		if (!p)
			continue;
		size_t len = strspn(p, "abcdefghijklmnopqrstuvwxyz_0123456789");
		if (p[len] != '(')
			continue;
		char name[64];
		snprintf(name, sizeof(name), "%.*s", (int)len, p);
		functions++;
		/* Named as a function: "tdm_x(" in the synopsis or ".BR tdm_x ()". */
		char call[80], ref[80];
		snprintf(call, sizeof(call), "%s(", name);
		snprintf(ref, sizeof(ref), ".BR %s ", name);
		if (!strstr(page, call) && !strstr(page, ref)) {
			print_error("libtandem.3: %s is not documented\n", name);
			missing++;
		}
	}
	assert_true(functions >= 20);
	assert_int_equal(missing, 0);
	free(header);
	free(page);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_toml_page_has_every_key),
		cmocka_unit_test(test_library_page_has_every_function),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
