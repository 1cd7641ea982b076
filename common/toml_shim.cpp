/* C interface over tomlplusplus; see toml_shim.h.
 *
 * Every exception is caught here: nothing thrown by the parser, the standard
 * library or an allocation may unwind into C.
 */
#ifndef NDEBUG
/* tomlplusplus asserts on some malformed input when assertions are on. */
#error "toml_shim.cpp must be compiled with -DNDEBUG"
#endif

#include "common/toml_shim.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

namespace
{

struct shim_error {
	int *line;
	int *col;
	char *msg;
	size_t msg_len;
};

__attribute__((format(printf, 4, 5))) void set_error(const shim_error &e, int line, int col,
                                                     const char *fmt, ...)
{
	if (e.line)
		*e.line = line;
	if (e.col)
		*e.col = col;
	if (e.msg && e.msg_len) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(e.msg, e.msg_len, fmt, ap);
		va_end(ap);
	}
}

/* 1-based line and column of byte offset off (columns count bytes, which for
 * ASCII text is what the parser counts too). */
void position_of(const char *text, size_t off, int *line, int *col)
{
	size_t l = 1, c = 1;

	for (size_t i = 0; i < off; i++) {
		if (text[i] == '\n') {
			l++;
			c = 1;
		} else {
			c++;
		}
	}
	*line = static_cast<int>(l);
	*col = static_cast<int>(c);
}

/* Only 7-bit text without NUL is accepted. */
bool check_bytes(const char *text, size_t len, const shim_error &e)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = static_cast<unsigned char>(text[i]);
		int line, col;

		if (c != 0 && c < 0x80)
			continue;
		position_of(text, i, &line, &col);
		if (c == 0)
			set_error(e, line, col, "NUL byte (only text is accepted)");
		else
			set_error(e, line, col, "non-ASCII byte 0x%02x (only ASCII is accepted)",
			          c);
		return false;
	}
	return true;
}

/* Skips a string starting at text[i] (a quote), returns the offset after it.
 * An unterminated string ends at the end of its line (single-line) or of the
 * text (multi-line); the parser reports those. */
size_t skip_string(const char *text, size_t len, size_t i)
{
	const char q = text[i];
	const bool basic = q == '"';

	if (i + 2 < len && text[i + 1] == q && text[i + 2] == q) {
		for (i += 3; i < len; i++) {
			if (basic && text[i] == '\\') {
				i++;
				continue;
			}
			if (i + 2 < len && text[i] == q && text[i + 1] == q && text[i + 2] == q) {
				i += 3;
				/* up to two quotes may end the content: """a""""" */
				for (int extra = 0; extra < 2 && i < len && text[i] == q; extra++)
					i++;
				return i;
			}
		}
		return len;
	}
	for (i++; i < len && text[i] != '\n'; i++) {
		if (basic && text[i] == '\\') {
			if (i + 1 < len && text[i + 1] != '\n')
				i++;
			continue;
		}
		if (text[i] == q)
			return i + 1;
	}
	return i;
}

/* Bounds how deep the parser's tree can get: the parser limits nested values
 * itself, but not dotted keys, whose tables it builds and destroys by
 * recursion. Dots are counted per run of text between separators, outside
 * strings and comments (a float or a time has at most one). */
bool check_depth(const char *text, size_t len, const shim_error &e)
{
	int dots = 0, braces = 0;
	int line, col;
	size_t i = 0;

	while (i < len) {
		switch (text[i]) {
		case '#':
			while (i < len && text[i] != '\n')
				i++;
			continue;
		case '"':
		case '\'': i = skip_string(text, len, i); continue;
		case '\n':
		case '=':
		case ',':
		case '[':
		case ']': dots = 0; break;
		case '{':
			dots = 0;
			if (++braces > TOML_SHIM_MAX_INLINE_DEPTH) {
				position_of(text, i, &line, &col);
				set_error(e, line, col, "inline tables nested more than %d deep",
				          TOML_SHIM_MAX_INLINE_DEPTH);
				return false;
			}
			break;
		case '}':
			dots = 0;
			if (braces > 0)
				braces--;
			break;
		case '.':
			if (++dots >= TOML_SHIM_MAX_KEY_PARTS) {
				position_of(text, i, &line, &col);
				set_error(e, line, col, "dotted key with more than %d parts",
				          TOML_SHIM_MAX_KEY_PARTS);
				return false;
			}
			break;
		default: break;
		}
		i++;
	}
	return true;
}

bool is_bare_key(std::string_view k)
{
	if (k.empty())
		return false;
	for (char c : k) {
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		          (c >= '0' && c <= '9') || c == '_' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* Appends key k to path as TOML would write it. */
void append_key(std::string &path, std::string_view k)
{
	if (!path.empty())
		path += '.';
	if (is_bare_key(k)) {
		path += k;
		return;
	}
	path += '"';
	for (char c : k) {
		unsigned char u = static_cast<unsigned char>(c);

		if (c == '"' || c == '\\') {
			path += '\\';
			path += c;
		} else if (u < 0x20 || u == 0x7f) {
			char buf[8];

			snprintf(buf, sizeof(buf), "\\u%04x", u);
			path += buf;
		} else {
			path += c;
		}
	}
	path += '"';
}

/* A key of the document: the nodes under it (a value, or an array and its
 * elements) refer to it; its path is built from its parents when visited. */
struct key_ref {
	const toml::key *key;
	size_t parent; /* index of the enclosing table's key_ref, or NO_PARENT */
	int depth;
};

constexpr size_t NO_PARENT = static_cast<size_t>(-1);

struct node_ref {
	const toml::node *node;
	size_t key; /* index of its key_ref */
	int array_index;
	int line, col;
};

struct collection {
	std::vector<key_ref> keys;
	std::vector<node_ref> nodes;
};

void add_node(collection &c, const toml::node &n, size_t key, int array_index)
{
	const toml::source_position &p = n.source().begin;

	c.nodes.push_back(node_ref{ &n, key, array_index, static_cast<int>(p.line),
	                            static_cast<int>(p.column) });
}

void collect(const toml::table &t, size_t parent, int depth, collection &c)
{
	for (auto &&[k, n] : t) {
		const size_t id = c.keys.size();

		c.keys.push_back(key_ref{ &k, parent, depth + 1 });
		add_node(c, n, id, -1);
		if (const toml::table *sub = n.as_table()) {
			collect(*sub, id, depth + 1, c);
		} else if (const toml::array *arr = n.as_array()) {
			for (size_t i = 0; i < arr->size(); i++)
				add_node(c, (*arr)[i], id, static_cast<int>(i));
		}
	}
}

/* The dotted path of keys[id], as TOML would write it. */
void build_path(const collection &c, size_t id, std::vector<std::string_view> &parts,
                std::string &path)
{
	parts.clear();
	for (; id != NO_PARENT; id = c.keys[id].parent)
		parts.push_back(c.keys[id].key->str());
	path.clear();
	for (size_t i = parts.size(); i-- > 0;)
		append_key(path, parts[i]);
}

void fill_item(const node_ref &r, const key_ref &k, toml_item &it)
{
	const toml::node &n = *r.node;

	it = toml_item{};
	it.depth = k.depth;
	it.array_index = r.array_index;
	it.line = r.line;
	it.col = r.col;
	it.key_line = static_cast<int>(k.key->source().begin.line);
	it.key_col = static_cast<int>(k.key->source().begin.column);

	switch (n.type()) {
	case toml::node_type::string: {
		const std::string &s = n.as_string()->get();

		it.type = TOML_ITEM_STRING;
		it.s = s.c_str();
		it.s_len = s.size();
		break;
	}
	case toml::node_type::integer:
		it.type = TOML_ITEM_INT;
		it.i = n.as_integer()->get();
		break;
	case toml::node_type::floating_point:
		it.type = TOML_ITEM_FLOAT;
		it.f = n.as_floating_point()->get();
		break;
	case toml::node_type::boolean:
		it.type = TOML_ITEM_BOOL;
		it.b = n.as_boolean()->get() ? 1 : 0;
		break;
	case toml::node_type::array:
		it.type = TOML_ITEM_ARRAY;
		it.array_len = n.as_array()->size();
		break;
	case toml::node_type::table: it.type = TOML_ITEM_TABLE; break;
	case toml::node_type::date:
		it.type = TOML_ITEM_OTHER;
		it.s = "date";
		break;
	case toml::node_type::time:
		it.type = TOML_ITEM_OTHER;
		it.s = "time";
		break;
	default:
		it.type = TOML_ITEM_OTHER;
		it.s = "date-time";
		break;
	}
}

int walk(const char *text, size_t len, toml_visit_fn fn, void *ctx, const shim_error &err)
{
	if (!check_bytes(text, len, err) || !check_depth(text, len, err))
		return TOML_SHIM_ERROR;

	toml::table doc;
	try {
		doc = toml::parse(std::string_view(text, len));
	} catch (const toml::parse_error &e) {
		const toml::source_position &p = e.source().begin;

		set_error(err, static_cast<int>(p.line), static_cast<int>(p.column), "%s",
		          std::string(e.description()).c_str());
		return TOML_SHIM_ERROR;
	}
	if (!fn)
		return 0;

	collection c;
	collect(doc, NO_PARENT, 0, c);
	/* std::map order is by key; visit in source order instead, so that
	 * the first problem in the text is the one reported. Stable, so that
	 * a table or array stays ahead of what it holds at equal positions. */
	std::stable_sort(c.nodes.begin(), c.nodes.end(), [](const node_ref &a, const node_ref &b) {
		if (a.line != b.line)
			return a.line < b.line;
		return a.col < b.col;
	});

	std::vector<std::string_view> parts;
	std::string path, key;
	size_t last = NO_PARENT;
	for (const node_ref &r : c.nodes) {
		const key_ref &k = c.keys[r.key];
		toml_item it;

		fill_item(r, k, it);
		if (r.key != last) { /* elements follow their array */
			build_path(c, r.key, parts, path);
			key.assign(k.key->str());
			last = r.key;
		}
		it.path = path.c_str();
		it.key = key.c_str();
		int rc = fn(ctx, &it);
		if (rc)
			return rc;
	}
	return 0;
}

} // namespace

extern "C" int toml_shim_walk(const char *text, size_t len, toml_visit_fn fn, void *ctx,
                              int *err_line, int *err_col, char *err_msg, size_t err_len)
{
	const shim_error err = { err_line, err_col, err_msg, err_len };

	if (err_msg && err_len)
		err_msg[0] = '\0';
	if (!text && len) {
		set_error(err, 0, 0, "no text");
		return TOML_SHIM_ERROR;
	}
	if (!text)
		text = "";
	try {
		return walk(text, len, fn, ctx, err);
	} catch (const std::bad_alloc &) {
		set_error(err, 0, 0, "out of memory");
	} catch (const std::exception &e) {
		set_error(err, 0, 0, "TOML parser failed: %s", e.what());
	} catch (...) {
		set_error(err, 0, 0, "TOML parser failed");
	}
	return TOML_SHIM_ERROR;
}

extern "C" const char *toml_shim_type_name(enum toml_item_type type)
{
	switch (type) {
	case TOML_ITEM_STRING: return "string";
	case TOML_ITEM_INT: return "integer";
	case TOML_ITEM_FLOAT: return "float";
	case TOML_ITEM_BOOL: return "boolean";
	case TOML_ITEM_ARRAY: return "array";
	case TOML_ITEM_TABLE: return "table";
	case TOML_ITEM_OTHER: break;
	}
	return "date/time";
}
