/* starpu2machine: a machine description (docs/machines.md) from StarPU 1.3
 * sampling files, for `tandemd --simulate`.
 *
 *   starpu2machine --dir DIR --host HOST [--ncpus N] [--ncuda N] [-o FILE]
 *
 * DIR holds bus_HOST.{config,bandwidth,latency} and the codelet models of
 * StarPU's Cholesky and LU examples (chol_model_*.HOST,
 * starpu_dlu_lu_model_*.HOST); tools/starpu_perfmodel.h says what is read.
 * Writes to FILE (replaced only when the whole conversion succeeds) or to
 * standard output. Exit status: 0, 1 on a conversion error, 2 on a usage
 * error. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/version.h"
#include "tools/starpu_perfmodel.h"

static void usage(FILE *f)
{
	fputs("usage: starpu2machine --dir DIR --host HOST [--ncpus N] [--ncuda N] [-o FILE]\n"
	      "  Writes a machine description (docs/machines.md) from StarPU 1.3 sampling\n"
	      "  files: bus_HOST.{config,bandwidth,latency} and the models of StarPU's\n"
	      "  Cholesky and LU examples in DIR.\n"
	      "  --ncpus N, --ncuda N   keep the first N CPU cores / CUDA devices (default:\n"
	      "                         all that bus_HOST.config lists)\n"
	      "  -o FILE                write to FILE instead of standard output\n"
	      "  -h, --help             show this help\n"
	      "  -V, --version          show the version\n",
	      f);
}

static int count_arg(const char *s, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (!*s || *end || errno || v < 0 || v > 4096)
		return -1;
	*out = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "host", required_argument, NULL, 'H' },
		{ "ncpus", required_argument, NULL, 'c' },
		{ "ncuda", required_argument, NULL, 'g' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct spm_options o = { .ncpus = -1, .ncuda = -1 };
	const char *output = NULL;
	char err[1024], tmp[4096];
	FILE *out = stdout;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "o:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': o.dir = optarg; break;
		case 'H': o.host = optarg; break;
		case 'c':
		case 'g':
			if (count_arg(optarg, opt == 'c' ? &o.ncpus : &o.ncuda)) {
				fprintf(stderr, "starpu2machine: --%s: not a count: %s\n",
				        opt == 'c' ? "ncpus" : "ncuda", optarg);
				return 2;
			}
			break;
		case 'o': output = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("starpu2machine %s\n", TDM_VERSION_STRING); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc || !o.dir || !o.host) {
		usage(stderr);
		return 2;
	}
	if (output) {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", output, (long)getpid()) >=
		    (int)sizeof(tmp)) {
			fprintf(stderr, "starpu2machine: %s: path too long\n", output);
			return 1;
		}
		if (!(out = fopen(tmp, "w"))) {
			fprintf(stderr, "starpu2machine: %s: %s\n", tmp, strerror(errno));
			return 1;
		}
	}
	rc = spm_convert(&o, out, err, sizeof(err));
	if (output) {
		if (fclose(out) && !rc) {
			snprintf(err, sizeof(err), "%.900s: %s", tmp, strerror(errno));
			rc = -1;
		}
		if (!rc && rename(tmp, output)) {
			snprintf(err, sizeof(err), "%.900s: %s", output, strerror(errno));
			rc = -1;
		}
		if (rc)
			unlink(tmp);
	}
	if (rc) {
		fprintf(stderr, "starpu2machine: %s\n", err);
		return 1;
	}
	return 0;
}
