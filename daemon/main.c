/* tandemd: command line, configuration, run. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/server.h"
#include "sim/sim.h"
#include "policies/policy.h"
#include "tandem.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "Usage: tandemd [OPTIONS]\n"
	        "Schedules client task graphs on this machine's devices.\n"
	        "\n"
	        "  -c, --config FILE      read the configuration from FILE\n"
	        "                         (default: the embedded defaults, see --print-config)\n"
	        "  -s, --socket PATH      listen on PATH (overrides daemon.socket; default\n"
	        "                         $XDG_RUNTIME_DIR/tandem/tandemd.sock, or\n"
	        "                         /run/tandem/tandemd.sock for root)\n"
	        "  -l, --log-level LEVEL  error, warn, info or debug (overrides daemon.log_level)\n"
	        "  -p, --policy NAME      scheduling policy (overrides engine.policy)\n"
	        "      --check-config     check the configuration, print FILE:LINE:COL on error,\n"
	        "                         and exit (0 when valid)\n"
	        "      --print-config     print the embedded default configuration and exit\n"
	        "      --list-policies    print the registered policies and exit\n"
	        "      --ready-fd FD      write \"READY\\n\" to FD once clients can connect\n"
	        "      --simulate ...     replay a workload on a described machine instead of\n"
	        "                         serving clients (tandemd --simulate --help)\n"
	        "  -h, --help             show this help\n"
	        "  -V, --version          show the version\n"
	        "\n"
	        "Signals: SIGTERM/SIGINT drain in-flight graphs and exit 0; what still runs\n"
	        "after daemon.drain_timeout_s is canceled (at once on a second signal).\n"
	        "SIGHUP reloads the configuration file and keeps the running one if the new\n"
	        "one has an error.\n");
}

static int parse_level(const char *s, enum log_level *out)
{
	for (int l = LOG_ERROR; l <= LOG_DEBUG; l++) {
		if (strcmp(s, config_log_level_name((enum log_level)l)) == 0) {
			*out = (enum log_level)l;
			return 0;
		}
	}
	return -1;
}

int main(int argc, char **argv)
{
	enum { OPT_CHECK = 256, OPT_PRINT, OPT_LIST, OPT_READY };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "policy", required_argument, NULL, 'p' },
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "print-config", no_argument, NULL, OPT_PRINT },
		{ "list-policies", no_argument, NULL, OPT_LIST },
		{ "ready-fd", required_argument, NULL, OPT_READY },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *config_path = NULL, *socket_path = NULL, *level = NULL, *policy = NULL;
	bool check_only = false;
	int ready_fd = -1, opt;

	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--simulate") == 0)
			return sim_main(argc, argv);

	while ((opt = getopt_long(argc, argv, "c:s:l:p:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': config_path = optarg; break;
		case 's': socket_path = optarg; break;
		case 'l': level = optarg; break;
		case 'p': policy = optarg; break;
		case OPT_CHECK: check_only = true; break;
		case OPT_PRINT: fputs(config_default_toml, stdout); return 0;
		case OPT_LIST:
			for (const struct policy_ops *const *p = policy_list(); *p; p++)
				printf("%s\n", (*p)->name);
			return 0;
		case OPT_READY: {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 0 || v > 65535) {
				fprintf(stderr, "tandemd: --ready-fd: not a descriptor: %s\n",
				        optarg);
				return 2;
			}
			ready_fd = (int)v;
			break;
		}
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("tandemd %s (wire %u)\n", TDM_VERSION_STRING, TDM_WIRE_VERSION);
			return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tandemd: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	static struct daemon_config cfg;
	char err[CONFIG_ERR_MAX];
	config_defaults(&cfg);
	if (config_path && config_load_file(config_path, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (socket_path) {
		if (socket_path[0] != '/' || strlen(socket_path) >= sizeof(cfg.socket_path)) {
			fprintf(stderr,
			        "tandemd: --socket: need an absolute path under %zu bytes\n",
			        sizeof(cfg.socket_path));
			return 2;
		}
		snprintf(cfg.socket_path, sizeof(cfg.socket_path), "%s", socket_path);
	}
	if (level && parse_level(level, &cfg.log_level) != 0) {
		fprintf(stderr, "tandemd: --log-level: expected error, warn, info or debug\n");
		return 2;
	}
	if (policy) {
		if (strlen(policy) >= sizeof(cfg.policy)) {
			fprintf(stderr, "tandemd: --policy: name too long\n");
			return 2;
		}
		snprintf(cfg.policy, sizeof(cfg.policy), "%s", policy);
	}
	if (!policy_by_name(cfg.policy)) {
		fprintf(stderr, "tandemd: unknown policy \"%s\" (try --list-policies)\n",
		        cfg.policy);
		return 1;
	}
	if (check_only) {
		printf("%s: ok\n", config_path ? config_path : "(embedded defaults)");
		return 0;
	}

	static struct server srv;
	int rc = server_init(&srv, &cfg, config_path, ready_fd);
	if (rc == 0)
		rc = server_run(&srv);
	else
		log_error("cannot start: %s", tdm_strerror(rc));
	if (server_fini(&srv) != 0) {
		/* A worker still runs a kernel: no exit handlers (OpenBLAS's
		 * would free its buffers under it). */
		fflush(NULL);
		_exit(rc == 0 ? 0 : 1);
	}
	return rc == 0 ? 0 : 1;
}
