/* Integration test support: private daemons, the status document, graph
 * helpers. See support.h. */
#include "support.h"
#include "support_raw.h"

#include "common/xorshift.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tdmt_build_dir(void)
{
	const char *b = getenv("BUILD");
	return b && *b ? b : "build";
}

uint64_t tdmt_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void tdmt_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int status_code(int st)
{
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

int tdmt_wait_child(pid_t pid, int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return status_code(st);
		if (r < 0 && errno != EINTR)
			return -1;
		if (tdmt_now_ns() >= deadline)
			break;
		tdmt_sleep_ms(2);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return -1;
}

/* In a child just forked: never outlive the test (it may crash). */
static void die_with_parent(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
}

pid_t tdmt_spawn(const char *exe, const char *const *argv, const char *out_path,
                 const char *err_path)
{
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	die_with_parent(parent);
	int fo = out_path ? open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : 1;
	int fe = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : 2;
	if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
		_exit(126);
	execv(exe, (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
	_exit(127);
}

pid_t tdmt_fork_stoppable(int (*fn)(int stop_fd), int *stop)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[1]);
		_exit(fn(p[0]));
	}
	close(p[0]);
	*stop = p[1];
	return pid;
}

int tdmt_stop_child(pid_t pid, int stop, int timeout_ms)
{
	close(stop);
	return tdmt_wait_child(pid, timeout_ms);
}

static int write_file(const char *path, const char *text)
{
	char tmp[TDMT_PATH_MAX + 8];
	size_t len = strlen(text);

	/* Write then rename, so a daemon reloading on SIGHUP never reads a
	 * half-written file. */
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	const char *p = text;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) != 0 || rename(tmp, path) != 0)
		return -1;
	return 0;
}

int tdmt_daemon_write_config(struct tdmt_daemon *d, const char *toml)
{
	return write_file(d->config, toml ? toml : "");
}

int tdmt_daemon_prepare(struct tdmt_daemon *d, const char *toml)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->dir, sizeof(d->dir), "/tmp/tdmt.XXXXXX");
	if (!mkdtemp(d->dir))
		return -1;
	/* Readable by others: a test client may drop privileges. */
	if (chmod(d->dir, 0755) != 0)
		return -1;
	snprintf(d->sock, sizeof(d->sock), "%s/tandemd.sock", d->dir);
	snprintf(d->config, sizeof(d->config), "%s/tandemd.toml", d->dir);
	snprintf(d->log, sizeof(d->log), "%s/tandemd.log", d->dir);
	return tdmt_daemon_write_config(d, toml);
}

int tdmt_daemon_launch(struct tdmt_daemon *d, const char *socket_path, int timeout_ms)
{
	char exe[512], fdarg[16];
	int pfd[2];

	snprintf(exe, sizeof(exe), "%s/bin/tandemd", tdmt_build_dir());
	/* Calibration and models of test daemons live in the build tree, shared
	 * by all of them (one calibration per build), never in the user's
	 * state; a test that wants its own sets daemon.state_dir. */
	char state[640], cwd[512];
	const char *b = tdmt_build_dir();
	if (b[0] == '/')
		snprintf(state, sizeof(state), "%s/test-state", b);
	else if (getcwd(cwd, sizeof(cwd)))
		snprintf(state, sizeof(state), "%s/%s/test-state", cwd, b);
	else
		return -3;
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -3;
	if (d->run_uid && chown(d->dir, d->run_uid, d->run_gid) != 0)
		return -3;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -3;
	}
	if (pid == 0) {
		sigset_t none;
		die_with_parent(parent);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int log = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int null = open("/dev/null", O_RDWR);
		if (log < 0 || null < 0)
			_exit(127);
		dup2(null, 0);
		dup2(log, 1);
		dup2(log, 2);
		fcntl(pfd[1], F_SETFD, 0);
		unsetenv("STATE_DIRECTORY");
		setenv("XDG_STATE_HOME", state, 1);
		if (d->nofile) {
			struct rlimit rl = { d->nofile, d->nofile };
			if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
				_exit(127);
		}
		if (d->run_uid && (setgroups(0, NULL) || setgid(d->run_gid) || setuid(d->run_uid)))
			_exit(127);
		snprintf(fdarg, sizeof(fdarg), "%d", pfd[1]);
		char *argv[] = {
			exe,          "--config", d->config, "--socket", (char *)socket_path,
			"--ready-fd", fdarg,      NULL
		};
		if (!socket_path) {
			/* The daemon's own default, the fallback under /tmp. */
			char *dflt[] = { exe, "--config", d->config, "--ready-fd", fdarg, NULL };
			unsetenv("XDG_RUNTIME_DIR");
			unsetenv("TANDEM_SOCKET");
			execv(exe, dflt);
		}
		execv(exe, argv);
		dprintf(2, "exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	d->pid = pid;
	d->exit_status = 0;

	char buf[16];
	size_t got = 0;
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int rc = -2;
	for (;;) {
		uint64_t now = tdmt_now_ns();
		if (now >= deadline)
			break;
		struct pollfd p = { pfd[0], POLLIN, 0 };
		int n = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			continue;
		ssize_t k = read(pfd[0], buf + got, sizeof(buf) - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = -1; /* closed without READY: it exited */
			break;
		}
		got += (size_t)k;
		buf[got] = '\0';
		if (strstr(buf, "READY\n")) {
			rc = 0;
			break;
		}
		if (got >= sizeof(buf) - 1) {
			rc = -3;
			break;
		}
	}
	close(pfd[0]);
	if (rc == 0)
		return 0;
	if (rc == -1) {
		d->exit_status = tdmt_wait_child(pid, timeout_ms);
		d->pid = 0;
		return -1;
	}
	kill(pid, SIGKILL);
	tdmt_wait_child(pid, 5000);
	d->pid = 0;
	return rc;
}

int tdmt_daemon_start(struct tdmt_daemon *d, const char *toml)
{
	if (tdmt_daemon_prepare(d, toml) != 0)
		return -3;
	int rc = tdmt_daemon_launch(d, d->sock, 30000);
	if (rc != 0) {
		fprintf(stderr, "tandemd did not start (%d, status %d)\n", rc, d->exit_status);
		d->failed = true;
	}
	return rc;
}

int tdmt_daemon_stop(struct tdmt_daemon *d, int timeout_ms)
{
	if (d->pid <= 0)
		return d->exit_status;
	kill(d->pid, SIGTERM);
	int st = tdmt_wait_child(d->pid, timeout_ms);
	d->pid = 0;
	d->exit_status = st;
	return st;
}

int tdmt_after_test(struct tdmt_daemon *d)
{
	if (!tdmt_test_passed())
		d->failed = true;
	if (d->pid > 0 && !tdmt_daemon_alive(d)) {
		fprintf(stderr, "tandemd died (status %d)\n", d->exit_status);
		d->failed = true;
		return -1;
	}
	return 0;
}

bool tdmt_daemon_alive(struct tdmt_daemon *d)
{
	int st;
	if (d->pid <= 0)
		return false;
	pid_t r = waitpid(d->pid, &st, WNOHANG);
	if (r == d->pid) {
		d->exit_status = status_code(st);
		d->pid = 0;
		return false;
	}
	return r == 0;
}

void tdmt_daemon_dump_log(const struct tdmt_daemon *d)
{
	char buf[4096];
	int fd = open(d->log, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	off_t size = lseek(fd, 0, SEEK_END);
	off_t from = size > 65536 ? size - 65536 : 0;
	lseek(fd, from, SEEK_SET);
	fprintf(stderr, "---- %s (%s) ----\n", d->log, from ? "tail" : "whole");
	fflush(stderr);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (write(2, buf, (size_t)n) < 0)
			break;
	}
	fprintf(stderr, "---- end of %s ----\n", d->log);
	close(fd);
}

void tdmt_daemon_cleanup(struct tdmt_daemon *d)
{
	if (!d->dir[0])
		return;
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		tdmt_wait_child(d->pid, 5000);
		d->pid = 0;
	}
	if (d->failed) {
		tdmt_daemon_dump_log(d);
		fprintf(stderr, "(daemon directory kept: %s)\n", d->dir);
	} else {
		char path[TDMT_PATH_MAX + 8];
		unlink(d->log);
		unlink(d->config);
		unlink(d->sock);
		snprintf(path, sizeof(path), "%s.new", d->config);
		unlink(path);
		rmdir(d->dir);
	}
	d->dir[0] = '\0';
}

bool tdmt_log_contains(const struct tdmt_daemon *d, const char *text)
{
	FILE *f = fopen(d->log, "re");
	char line[2048];
	bool found = false;
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, text) != NULL;
	fclose(f);
	return found;
}

int tdmt_wait_log(const struct tdmt_daemon *d, const char *text, int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		if (tdmt_log_contains(d, text))
			return 0;
		if (tdmt_now_ns() >= deadline)
			return -1;
		tdmt_sleep_ms(5);
	}
}

int tdmt_run_tandemd(const char *const *args, char *out, size_t outlen, int timeout_ms)
{
	char exe[512];
	const char *argv[32];
	int pfd[2];
	size_t n = 0, got = 0;

	snprintf(exe, sizeof(exe), "%s/bin/tandemd", tdmt_build_dir());
	argv[n++] = exe;
	for (size_t i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	if (outlen)
		out[0] = '\0';
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	close(pfd[1]);
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		uint64_t now = tdmt_now_ns();
		if (now >= deadline)
			break;
		struct pollfd p = { pfd[0], POLLIN, 0 };
		int r = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
		if (r <= 0)
			continue;
		char tmp[1024];
		ssize_t k = read(pfd[0], tmp, sizeof(tmp));
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		size_t room = outlen > got + 1 ? outlen - got - 1 : 0;
		size_t take = (size_t)k < room ? (size_t)k : room;
		memcpy(out + got, tmp, take);
		got += take;
		if (outlen)
			out[got] = '\0';
	}
	close(pfd[0]);
	uint64_t now = tdmt_now_ns();
	int left = now < deadline ? (int)((deadline - now) / 1000000ull) + 1 : 1;
	return tdmt_wait_child(pid, left);
}

/* ---- control protocol ---- */

char *tdmt_control_json(const char *sock, uint32_t type)
{
	return tdmt_control_json_timeout(sock, type, 30000);
}

char *tdmt_control_json_timeout(const char *sock, uint32_t type, int timeout_ms)
{
	struct tdmt_raw r;
	char *json = NULL;
	if (tdmt_raw_connect(&r, sock, TDM_ROLE_CONTROL, timeout_ms) == 0 &&
	    tdmt_raw_control_ex(r.sock, type, NULL, 0, NULL, 0, &json) != 0) {
		free(json);
		json = NULL;
	}
	tdmt_raw_close(&r);
	return json;
}

char *tdmt_status_json(const char *sock)
{
	return tdmt_control_json(sock, TDM_MSG_CTL_STATUS);
}

json_t *tdmt_status_doc(const char *sock)
{
	char *text = tdmt_status_json(sock);
	if (!text)
		return NULL;
	json_t *doc = json_loads(text, 0, NULL);
	free(text);
	return doc;
}

json_t *tdmt_status_device(json_t *doc, const char *name)
{
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(doc, "devices"), i, d)
	{
		const char *n = json_string_value(json_object_get(d, "name"));
		if (n && !strcmp(n, name))
			return d;
	}
	return NULL;
}

int tdmt_device_field(const char *sock, const char *name, const char *key, int64_t *out)
{
	json_t *doc = tdmt_status_doc(sock);
	if (!doc)
		return -1;
	json_t *d = tdmt_status_device(doc, name);
	*out = d ? (int64_t)json_integer_value(json_object_get(d, key)) : -1;
	json_decref(doc);
	return 0;
}

int64_t tdmt_daemon_rss_kib(const struct tdmt_daemon *d)
{
	char path[64], line[256];
	int64_t kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %" SCNd64, &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int tdmt_daemon_fds(const struct tdmt_daemon *d, struct tdmt_fds *out)
{
	char path[64], link[256];
	memset(out, 0, sizeof(*out));
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	DIR *dir = opendir(path);
	if (!dir)
		return -1;
	int dfd = dirfd(dir);
	for (struct dirent *e; (e = readdir(dir));) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dfd)
			continue;
		out->open++;
		ssize_t n = readlinkat(dfd, e->d_name, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			out->memfds += strncmp(link, "/memfd:", 7) == 0;
		}
	}
	closedir(dir);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)d->pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char line[512];
	while (fgets(line, sizeof(line), f))
		out->memfd_maps += strstr(line, " /memfd:") != NULL;
	fclose(f);
	return 0;
}

int64_t tdmt_daemon_cpu_ns(const struct tdmt_daemon *d)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields 14 and 15 (utime, stime, in ticks), after the ")" that ends
	 * the command name. */
	char *p = strrchr(buf, ')');
	unsigned long long ut, st;
	if (!p ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK)));
}

int tdmt_counter(const char *sock, const char *name, int64_t *out)
{
	char *text = tdmt_status_json(sock);
	json_error_t jerr;
	int rc = -1;

	if (!text)
		return -1;
	json_t *doc = json_loads(text, 0, &jerr);
	free(text);
	if (!doc)
		return -1;
	json_t *v = json_object_get(json_object_get(doc, "counters"), name);
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		rc = 0;
	}
	json_decref(doc);
	return rc;
}

int tdmt_client_field(const char *sock, pid_t pid, const char *key, int64_t *out)
{
	char *text = tdmt_status_json(sock);
	json_error_t jerr;
	json_t *cl;
	size_t i;
	int rc = -1;

	if (!text)
		return -1;
	json_t *doc = json_loads(text, 0, &jerr);
	free(text);
	if (!doc)
		return -1;
	json_array_foreach(json_object_get(doc, "clients"), i, cl)
	{
		json_t *v = json_object_get(cl, key);
		if (json_integer_value(json_object_get(cl, "pid")) == pid && json_is_integer(v)) {
			*out = (int64_t)json_integer_value(v);
			rc = 0;
			break;
		}
	}
	json_decref(doc);
	return rc;
}

int tdmt_wait_client_field(const char *sock, pid_t pid, const char *key, int64_t min,
                           int timeout_ms)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		int64_t v;
		if (tdmt_client_field(sock, pid, key, &v) == 0 && v >= min)
			return 0;
		if (tdmt_now_ns() >= deadline)
			return -1;
		tdmt_sleep_ms(1);
	}
}

int tdmt_wait_counter(const char *sock, const char *name, int64_t want, int timeout_ms,
                      int64_t *last)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int64_t v = -1;
	for (;;) {
		if (tdmt_counter(sock, name, &v) == 0 && v == want) {
			if (last)
				*last = v;
			return 0;
		}
		if (tdmt_now_ns() >= deadline)
			break;
		tdmt_sleep_ms(5);
	}
	if (last)
		*last = v;
	return -1;
}

const char *const tdmt_baseline_counters[] = {
	"sessions_live",   "buffers_live",   "buffer_bytes_live",
	"tasks_in_flight", "tasks_reserved", NULL,
};

int tdmt_wait_counters_zero(const char *sock, const char *const *names, int timeout_ms,
                            const char **which, int64_t *value)
{
	uint64_t deadline = tdmt_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (;;) {
		const char *bad = NULL;
		int64_t v = -1;
		for (size_t i = 0; names[i]; i++) {
			if (tdmt_counter(sock, names[i], &v) != 0 || v != 0) {
				bad = names[i];
				break;
			}
		}
		if (!bad)
			return 0;
		if (tdmt_now_ns() >= deadline) {
			if (which)
				*which = bad;
			if (value)
				*value = v;
			return -1;
		}
		tdmt_sleep_ms(10);
	}
}

/* ---- graphs ---- */

int tdmt_connect(const char *sock, tdm_client **c)
{
	return tdm_connect(&(struct tdm_connect_opts){ .socket_path = sock }, c);
}

int tdmt_lookup_kernels(tdm_client *c, struct tdmt_kernels *k)
{
	int err;
	if ((err = tdm_kernel_lookup(c, "noop", &k->noop)) ||
	    (err = tdm_kernel_lookup(c, "spin", &k->spin)) ||
	    (err = tdm_kernel_lookup(c, "fill", &k->fill)) ||
	    (err = tdm_kernel_lookup(c, "axpy", &k->axpy)) ||
	    (err = tdm_kernel_lookup(c, "sgemm", &k->sgemm)))
		return err;
	return 0;
}

int tdmt_add_noop(tdm_graph *g, const struct tdmt_kernels *k, uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k->noop };
	return tdm_graph_add_task(g, &t, idx);
}

int tdmt_add_spin(tdm_graph *g, const struct tdmt_kernels *k, int64_t us, uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k->spin, .nscalars = 1 };
	t.scalars[0] = TDM_I64(us);
	return tdm_graph_add_task(g, &t, idx);
}

int tdmt_add_fill(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer b, uint64_t off,
                  uint64_t len, float v, uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k->fill, .nargs = 1, .nscalars = 1 };
	t.args[0] = TDM_ARG(b, TDM_W, off, len);
	t.scalars[0] = TDM_F32(v);
	return tdm_graph_add_task(g, &t, idx);
}

int tdmt_add_axpy(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer x, tdm_buffer y,
                  float alpha, uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k->axpy, .nargs = 2, .nscalars = 1 };
	t.args[0] = TDM_ARG(x, TDM_R, 0, 0);
	t.args[1] = TDM_ARG(y, TDM_RW, 0, 0);
	t.scalars[0] = TDM_F32(alpha);
	return tdm_graph_add_task(g, &t, idx);
}

int tdmt_add_sgemm(tdm_graph *g, const struct tdmt_kernels *k, tdm_buffer a, tdm_buffer b,
                   tdm_buffer c, int64_t m, int64_t n, int64_t kk, float alpha, float beta,
                   uint32_t *idx)
{
	struct tdm_task_desc t = { .kernel = k->sgemm, .nargs = 3, .nscalars = 5 };
	t.args[0] = TDM_ARG(a, TDM_R, 0, 0);
	t.args[1] = TDM_ARG(b, TDM_R, 0, 0);
	t.args[2] = TDM_ARG(c, TDM_RW, 0, 0);
	t.scalars[0] = TDM_I64(m);
	t.scalars[1] = TDM_I64(n);
	t.scalars[2] = TDM_I64(kk);
	t.scalars[3] = TDM_F32(alpha);
	t.scalars[4] = TDM_F32(beta);
	return tdm_graph_add_task(g, &t, idx);
}

uint64_t tdmt_rand(uint64_t *state)
{
	return xorshift64s(state);
}

uint64_t tdmt_rand_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
	return lo + tdmt_rand(state) % (hi - lo + 1);
}

/* ---- cmocka glue ---- */

static bool test_passed;

void tdmt_test_begin(void)
{
	test_passed = false;
}

void tdmt_test_ok(void)
{
	test_passed = true;
}

bool tdmt_test_passed(void)
{
	return test_passed;
}

int tdmt_remove_tree(const char *dir)
{
	char cmd[TDMT_PATH_MAX + 32];
	if (strchr(dir, '\'') || snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir) >= (int)sizeof(cmd))
		return -1;
	return system(cmd) == 0 ? 0 : -1;
}

int tdmt_group_start(void **state, struct tdmt_daemon *d, const char *toml)
{
	*state = d;
	if (tdmt_daemon_start(d, toml) != 0) {
		tdmt_daemon_cleanup(d);
		return -1;
	}
	return 0;
}

int tdmt_group_end(void **state)
{
	tdmt_daemon_cleanup(*state);
	return 0;
}

int tdmt_test_setup(void **state)
{
	(void)state;
	tdmt_test_begin();
	return 0;
}

int tdmt_test_teardown(void **state)
{
	return tdmt_after_test(*state);
}

int tdmt_test_end(struct tdmt_daemon *d, int stop_ms)
{
	int rc = tdmt_after_test(d);
	if (d->pid && stop_ms > 0)
		tdmt_daemon_stop(d, stop_ms);
	tdmt_daemon_cleanup(d);
	memset(d, 0, sizeof(*d));
	return rc;
}
