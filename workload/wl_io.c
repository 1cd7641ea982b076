/* The helpers every workload reader shares, kept free of the rest of the
 * daemon so that a client (examples/llm_serve.c) can link a reader with
 * just this file: reading a file whole, growing an array, names fit to
 * print. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errbuf.h"
#include "workload/workload.h"
#include "tandem.h"

const char *wl_next_line(const char *text, size_t len, size_t *pos, size_t *n)
{
	const char *s = text + *pos;
	const char *nl = memchr(s, '\n', len - *pos);

	*n = nl ? (size_t)(nl - s) : len - *pos;
	*pos += *n + (nl ? 1 : 0);
	if (*n && s[*n - 1] == '\r')
		(*n)--;
	return s;
}

bool wl_digits(const char *s, size_t n, uint32_t *v)
{
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (uint32_t)(s[i] - '0');
	}
	return true;
}

int wl_fail_at(char *err, size_t errlen, const char *name, size_t line, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_printf(err, errlen, "%s:%zu: %s", name, line, msg);
	return -TDM_EINVAL;
}

void wl_copy_name(char *dst, const char *s, size_t len)
{
	size_t n = 0;

	if (s)
		for (; n < len && n < WL_NAME_MAX - 1 && s[n]; n++) {
			unsigned char c = (unsigned char)s[n];

			dst[n] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
		}
	dst[n] = '\0';
}

const char *wl_basename(const char *path)
{
	const char *slash;

	if (!path)
		return "";
	slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

int wl_read_file(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *b = NULL;
	size_t got = 0;

	*buf = NULL;
	*len = 0;
	if (fd < 0) {
		err_printf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -TDM_ESYS;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (unsigned long long)st.st_size > max) {
		err_printf(err, errlen, "%s: not a regular file of at most %zu bytes", path, max);
		close(fd);
		return -TDM_EINVAL;
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b) {
		err_printf(err, errlen, "%s: out of memory", path);
		close(fd);
		return -TDM_ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, b + got, (size_t)st.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err_printf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			free(b);
			close(fd);
			return -TDM_ESYS;
		}
		if (r == 0)
			break; /* the file shrank: parse what is there */
		got += (size_t)r;
	}
	close(fd);
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

int wl_grow(void **p, uint32_t *cap, uint32_t need, size_t elem, uint32_t limit)
{
	uint32_t c = *cap ? *cap : 64;
	void *q;

	if (need <= *cap)
		return 0;
	while (c < need)
		c = c > limit / 2 ? limit : 2 * c;
	if (c < need)
		return -TDM_ENOMEM;
	q = realloc(*p, (size_t)c * elem);
	if (!q)
		return -TDM_ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}
