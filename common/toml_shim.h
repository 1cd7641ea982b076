/* A small C interface over tomlplusplus: parses a TOML document and visits
 * every node of it, in source order, with its dotted path and position.
 *
 * This is the daemon's only C++ translation unit; no C++ exception ever
 * crosses this interface.
 */
#ifndef TDM_COMMON_TOML_SHIM_H
#define TDM_COMMON_TOML_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits checked before parsing, so that no document can make the parser
 * build (and later tear down) a structure deep enough to exhaust the stack. */
#define TOML_SHIM_MAX_KEY_PARTS 32 /* parts of one dotted key: a.b.c = 3 */
#define TOML_SHIM_MAX_INLINE_DEPTH 8 /* nesting of inline tables { { } } */

enum toml_item_type {
	TOML_ITEM_STRING,
	TOML_ITEM_INT,
	TOML_ITEM_FLOAT,
	TOML_ITEM_BOOL,
	TOML_ITEM_ARRAY,
	TOML_ITEM_TABLE,
	TOML_ITEM_OTHER, /* date, time, date-time: s names which */
};

struct toml_item {
	/* Dotted path of the node, e.g. "engine.policy". A part that is not a
	 * bare key (A-Za-z0-9_-) is written quoted, as in TOML: a."b.c". */
	const char *path;
	const char *key; /* the last part of the path, unquoted */
	int depth; /* number of parts in path: 1 for a top-level key */
	enum toml_item_type type;
	int64_t i; /* TOML_ITEM_INT */
	double f; /* TOML_ITEM_FLOAT */
	int b; /* TOML_ITEM_BOOL */
	const char *s; /* TOML_ITEM_STRING (NUL-terminated), TOML_ITEM_OTHER */
	size_t s_len; /* TOML_ITEM_STRING: length; may contain NUL (\u0000) */
	size_t array_len; /* TOML_ITEM_ARRAY: number of elements */
	/* -1, or the index of this element in the array named by path. An
	 * element that is itself an array or a table is reported, but its
	 * contents are not visited. */
	int array_index;
	int line, col; /* 1-based position of the node (the value) in the source */
	int key_line, key_col; /* position of its key (an element's: the array's) */
};

/* Returns nonzero to stop the walk; toml_shim_walk then returns that value. */
typedef int (*toml_visit_fn)(void *ctx, const struct toml_item *item);

/* Returned by toml_shim_walk when the text is rejected or cannot be parsed.
 * A visitor should not return this value. */
#define TOML_SHIM_ERROR (-1)

/* Parses len bytes of text (no NUL terminator needed) and calls fn (if not
 * NULL) for every node, in the order of their positions in the text. At equal
 * positions a table or array comes before its contents; an array always comes
 * before its elements, and a table before its contents unless it is defined
 * after a subtable of it ([a.b] ... [a]). Returns 0 when every node was visited, the visitor's
 * nonzero result if it stopped the walk, or TOML_SHIM_ERROR, with the 1-based position of the
 * problem in *err_line, *err_col and a message in err_msg (each may be NULL), when the text is not
 * an ASCII-only TOML document within the limits above, or when memory runs out. */
int toml_shim_walk(const char *text, size_t len, toml_visit_fn fn, void *ctx, int *err_line,
                   int *err_col, char *err_msg, size_t err_len);

/* "string", "integer", "float", "boolean", "array", "table", "date/time". */
const char *toml_shim_type_name(enum toml_item_type type);

#ifdef __cplusplus
}
#endif

#endif
