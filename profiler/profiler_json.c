/* The cost models' document (profiler.h): profiler_to_json writes every
 * model with samples, the models kept aside and the observed links;
 * profiler_load_json learns such a document back. The document is untrusted
 * (a file on disk): every field is range-checked, one out of range is
 * skipped and counted, and a model is parsed into a private scratch model
 * first, then merged into the live one under its lock (the footprint union,
 * more samples winning). Models of kernels or device keys this daemon lacks
 * are kept aside in the form profiler_to_json gives, so that they are
 * written back. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profiler/profiler_internal.h"
#include "tandem.h"

#define DOC_MAX_MODELS 4096
#define DOC_MAX_LINKS (CAL_MAX_NODES * CAL_MAX_NODES)
#define ASIDE_MAX 1024
#define NAME_MAX_LEN 64

static const char *const source_name[COST_SOURCE_COUNT] = { "prior", "history", "linear", "power",
	                                                    "interp" };

/* ---- small helpers ------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

/* A measured time: observe gets whole nanoseconds, a document no less. */
static bool sample_ok(double v)
{
	return isfinite(v) && v >= 1 && v <= NS_MAX;
}

/* ---- to_json ----------------------------------------------------------------------- */

/* Adds v under k; false (v released) when either is missing. */
static bool put(json_t *o, const char *k, json_t *v)
{
	return v && json_object_set_new(o, k, v) == 0;
}

static bool append(json_t *a, json_t *v)
{
	return v && json_array_append_new(a, v) == 0;
}

static json_t *real_or_null(bool have, double v)
{
	return have && isfinite(v) ? json_real(v) : json_null();
}

static json_t *reals(const double *v, unsigned n)
{
	json_t *a = json_array();

	for (unsigned i = 0; a && i < n; i++) {
		if (!append(a, json_real(isfinite(v[i]) ? v[i] : 0.0))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *footprint_json(const struct fp_priv *v)
{
	double recent[RING];
	json_t *o = json_object();

	for (unsigned i = 0; i < v->len; i++)
		recent[i] = v->ring[(v->head + RING - v->len + i) % RING];
	if (o && put(o, "flops", json_real(v->f.flops)) && put(o, "bytes", json_real(v->f.bytes)) &&
	    put(o, "domain", json_real(v->f.domain)) &&
	    put(o, "n", json_integer((json_int_t)v->n)) &&
	    put(o, "estimate_ns", json_real(v->est)) && put(o, "spread_ns", json_real(v->spread)) &&
	    put(o, "recent", reals(recent, v->len)) &&
	    (!(v->prior > 0) || put(o, "prior_ns", json_real(v->prior))))
		return o;
	json_decref(o);
	return NULL;
}

static json_t *errors_json(const struct model *m)
{
	json_t *o = json_object();

	for (int s = 0; o && s < COST_SOURCE_COUNT; s++) {
		if (!put(o, source_name[s], real_or_null(m->err_n[s], 100 * m->err[s]))) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

static json_t *footprints_json(const struct model *m)
{
	json_t *a = json_array();

	for (unsigned s = 0; a && s < FP_SLOTS; s++) {
		if (m->priv[s].n && !append(a, footprint_json(&m->priv[s]))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* Medians over the recent (prediction, measured) ring: relative error in
 * percent, absolute error and measured time in microseconds. */
static void recent_medians(const struct model *m, double out[3])
{
	double rel[RING], abs_us[RING], took_us[RING];

	out[0] = out[1] = out[2] = 0;
	if (!m->rp_n)
		return;
	for (unsigned i = 0; i < m->rp_n; i++) {
		double d = fabs(m->rp_pred[i] - m->rp_took[i]);

		rel[i] = fmin(d / m->rp_took[i], ERR_CAP) * 100;
		abs_us[i] = d / 1e3;
		took_us[i] = m->rp_took[i] / 1e3;
	}
	out[0] = lower_median(rel, m->rp_n);
	out[1] = lower_median(abs_us, m->rp_n);
	out[2] = lower_median(took_us, m->rp_n);
}

/* The ring oldest first, as [[predicted_ns, measured_ns], ...]. */
static json_t *recent_predictions_json(const struct model *m)
{
	json_t *a = json_array();

	for (unsigned i = 0; a && i < m->rp_n; i++) {
		unsigned j = (m->rp_head + RING - m->rp_n + i) % RING;
		double pair[2] = { m->rp_pred[j], m->rp_took[j] };

		if (!append(a, reals(pair, 2))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* m under its lock, or a scratch model. */
static json_t *model_json(const struct model *m, const char *kernel, const char *key)
{
	json_t *o = json_object();
	double rm[3];

	recent_medians(m, rm);
	if (o && put(o, "kernel", json_string(kernel)) && put(o, "device", json_string(key)) &&
	    put(o, "samples", json_integer((json_int_t)(m->samples + atomic_load(&m->skipped)))) &&
	    put(o, "learned", json_integer((json_int_t)m->samples)) &&
	    put(o, "outliers", json_integer((json_int_t)m->outliers)) &&
	    put(o, "recent_err_pct", real_or_null(m->recent_n, 100 * m->recent_err)) &&
	    put(o, "recent_median_err_pct", real_or_null(m->rp_n, rm[0])) &&
	    put(o, "recent_abs_err_us", real_or_null(m->rp_n, rm[1])) &&
	    put(o, "recent_time_us", real_or_null(m->rp_n, rm[2])) &&
	    put(o, "recent_predictions", recent_predictions_json(m)) &&
	    put(o, "error_pct", errors_json(m)) &&
	    put(o, "linear", m->lin_ok ? reals(m->lin, NCOEF) : json_null()) &&
	    put(o, "power", m->pw_ok ? reals(m->pw, 2) : json_null()) &&
	    put(o, "prior_scale", json_real(m->scale)) && put(o, "footprints", footprints_json(m)))
		return o;
	json_decref(o);
	return NULL;
}

static bool models_json(const struct profiler *p, json_t *arr)
{
	for (uint32_t s = 0; s < p->nslots; s++) {
		for (uint32_t k = 0; k < p->nkernels; k++) {
			struct model *m = prof_model(p, s, k);
			json_t *o = NULL;
			bool ok;

			pthread_mutex_lock(&m->lock);
			if (m->samples)
				o = model_json(m, kernel_by_id(k)->name, p->slot_key[s]);
			ok = !m->samples || append(arr, o);
			pthread_mutex_unlock(&m->lock);
			if (!ok)
				return false;
		}
	}
	return true;
}

static bool aside_json(const struct profiler *p, json_t *arr)
{
	struct profiler *w = (struct profiler *)p; /* the lock only */
	bool ok = true;
	size_t i;
	json_t *m;

	pthread_mutex_lock(&w->aside_lock);
	json_array_foreach(p->aside, i, m)
	{
		if (!(ok = append(arr, json_deep_copy(m))))
			break;
	}
	pthread_mutex_unlock(&w->aside_lock);
	return ok;
}

static json_t *link_json(const struct link_state *l, uint32_t s, uint32_t t)
{
	double bw = LD(l->gbps_seen);

	return json_pack("{s:I, s:I, s:f, s:f, s:I}", "src", (json_int_t)s, "dst", (json_int_t)t,
	                 "gbps", bw > 0 ? bw : LD(l->gbps_cal), "latency_ns", LD(l->latency),
	                 "copies", (json_int_t)LD(l->copies));
}

static bool links_json(const struct profiler *p, json_t *arr)
{
	for (uint32_t s = 0; s < p->nnodes; s++)
		for (uint32_t t = 0; t < p->nnodes; t++)
			if (LD(p->link[s][t].copies) &&
			    !append(arr, link_json(&p->link[s][t], s, t)))
				return false;
	return true;
}

json_t *profiler_to_json(const struct profiler *p)
{
	json_t *doc = json_object(), *models = json_array(), *links = json_array();

	if (!p || !doc || !models || !links || !put(doc, "version", json_integer(1)))
		goto fail;
	if (!models_json(p, models) || !aside_json(p, models) || !links_json(p, links))
		goto fail;
	if (!put(doc, "models", models))
		goto fail_links;
	if (!put(doc, "links", links))
		goto fail_doc;
	return doc;
fail:
	json_decref(models);
fail_links:
	json_decref(links);
fail_doc:
	json_decref(doc);
	return NULL;
}

/* ---- load_json ------------------------------------------------------------------- */

static bool get_uint(const json_t *o, const char *k, uint64_t max, uint64_t *out)
{
	const json_t *v = json_object_get(o, k);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) > max)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool get_real(const json_t *o, const char *k, double lo, double hi, double *out)
{
	const json_t *v = json_object_get(o, k);
	double d;

	if (!json_is_number(v))
		return false;
	d = json_number_value(v);
	if (!isfinite(d) || d < lo || d > hi)
		return false;
	*out = d;
	return true;
}

/* [A-Za-z0-9._:-], 1 to max-1 characters: kernel names and device keys. */
static bool name_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n < max &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                 "0123456789._:-") == n;
}

static bool parse_recent(const json_t *a, struct fp_priv *v)
{
	size_t i;
	json_t *e;

	if (!json_is_array(a) || json_array_size(a) > RING)
		return false;
	json_array_foreach(a, i, e)
	{
		double d = json_is_number(e) ? json_number_value(e) : NAN;

		if (!sample_ok(d))
			return false;
		prof_fp_push(v, d);
	}
	return true;
}

static bool parse_footprint(const json_t *o, struct fp_priv *v)
{
	double est;

	memset(v, 0, sizeof(*v));
	if (!json_is_object(o) || !get_real(o, "flops", 0, FEAT_MAX, &v->f.flops) ||
	    !get_real(o, "bytes", 0, FEAT_MAX, &v->f.bytes) ||
	    !get_real(o, "domain", 0, FEAT_MAX, &v->f.domain) ||
	    !get_real(o, "estimate_ns", 0, NS_MAX, &est) ||
	    !parse_recent(json_object_get(o, "recent"), v))
		return false;
	if (v->len == 0) { /* no samples kept: the estimate stands for them */
		if (!sample_ok(est))
			return false;
		prof_fp_push(v, est);
	}
	if (!get_uint(o, "n", COUNT_MAX, &v->n) || v->n < v->len)
		return false;
	/* Optional (written since the prior was kept per footprint). */
	if (json_object_get(o, "prior_ns") && !get_real(o, "prior_ns", 0, NS_MAX, &v->prior))
		return false;
	v->f = clean_features(&v->f);
	v->key = footprint_key(&v->f);
	prof_fp_stats(v);
	return true;
}

/* src's footprint into m: a new one is added, a known one replaced when src
 * has more samples. */
static void absorb_footprint(struct model *m, const struct fp_priv *src)
{
	struct fp_view h;
	int s = prof_fp_find(m, src->key, &src->f, &h);
	uint64_t last;

	if (s >= 0 && m->priv[s].n >= src->n)
		return;
	if (s < 0) {
		s = (int)prof_fp_insert(m, src->key, &src->f);
		last = ++m->tick;
	} else {
		last = m->priv[s].last_use;
	}
	m->priv[s] = *src;
	m->priv[s].last_use = last;
	prof_fp_publish(m, (unsigned)s);
}

static void absorb_counters(struct model *m, const struct model *src)
{
	m->samples = src->samples;
	m->outliers = src->outliers;
	memcpy(m->err, src->err, sizeof(m->err));
	memcpy(m->err_n, src->err_n, sizeof(m->err_n));
	m->recent_err = src->recent_err;
	m->recent_n = src->recent_n;
	memcpy(m->rp_pred, src->rp_pred, sizeof(m->rp_pred));
	memcpy(m->rp_took, src->rp_took, sizeof(m->rp_took));
	m->rp_n = src->rp_n;
	m->rp_head = src->rp_head;
	memcpy(m->ratio, src->ratio, sizeof(m->ratio));
	m->nratio = src->nratio;
	m->ratio_head = src->ratio_head;
	m->scale = src->scale;
}

/* samples counts at least the samples of the footprints it holds, so that
 * a merge of disjoint footprints reads the same once saved and loaded. */
static void model_cover_footprints(struct model *m)
{
	uint64_t sum = 0;

	for (unsigned s = 0; s < FP_SLOTS; s++)
		sum += m->priv[s].n;
	if (m->samples < sum)
		m->samples = sum < COUNT_MAX ? sum : COUNT_MAX;
}

/* Merges scratch model src into m: the footprint union (more samples wins,
 * m on ties), the model-level figures of the side with more samples. */
static void model_absorb(struct model *m, const struct model *src)
{
	for (unsigned s = 0; s < FP_SLOTS; s++)
		if (src->priv[s].n)
			absorb_footprint(m, &src->priv[s]);
	if (src->samples > m->samples)
		absorb_counters(m, src);
	model_cover_footprints(m);
	prof_model_refit(m, true);
	prof_model_publish(m);
}

/* [[predicted_ns, measured_ns], ...], oldest first, at most RING pairs of
 * samples; all or nothing. */
static bool parse_recent_predictions(const json_t *a, struct model *m)
{
	double pred[RING], took[RING];
	size_t i, n = json_array_size(a);
	json_t *e;

	if (!json_is_array(a) || n > RING)
		return false;
	json_array_foreach(a, i, e)
	{
		const json_t *p = json_array_get(e, 0), *t = json_array_get(e, 1);

		pred[i] = json_is_number(p) ? json_number_value(p) : NAN;
		took[i] = json_is_number(t) ? json_number_value(t) : NAN;
		if (json_array_size(e) != 2 || !(isfinite(pred[i]) && pred[i] >= 0) ||
		    pred[i] > NS_MAX || !sample_ok(took[i]))
			return false;
	}
	m->rp_n = m->rp_head = 0;
	for (i = 0; i < n; i++)
		prof_recent_push(m, pred[i], took[i]);
	return true;
}

static void parse_errors(const json_t *o, struct model *m, size_t *skipped)
{
	for (int s = 0; s < COST_SOURCE_COUNT; s++) {
		const json_t *v = json_object_get(o, source_name[s]);

		if (!v || json_is_null(v))
			continue;
		if (get_real(o, source_name[s], 0, 100 * ERR_CAP, &m->err[s])) {
			m->err[s] /= 100;
			m->err_n[s] = ERR_WARM;
		} else {
			(*skipped)++;
		}
	}
}

static void parse_footprints(const json_t *a, struct model *m, size_t *skipped)
{
	struct fp_priv v;
	size_t i;
	json_t *e;

	if (!json_is_array(a)) {
		(*skipped)++;
		return;
	}
	json_array_foreach(a, i, e)
	{
		if (i >= FP_SLOTS || !parse_footprint(e, &v))
			(*skipped)++;
		else
			absorb_footprint(m, &v);
	}
}

/* A model's learned state into scratch model m (empty); the counters that
 * are out of range are skipped, the rest kept. */
static void parse_model(const json_t *o, struct model *m, size_t *skipped)
{
	const json_t *v;
	double d;

	parse_footprints(json_object_get(o, "footprints"), m, skipped);
	if (!get_uint(o, "samples", COUNT_MAX, &m->samples))
		(*skipped)++;
	model_cover_footprints(m);
	if (json_object_get(o, "outliers") && (!get_uint(o, "outliers", m->samples, &m->outliers)))
		(*skipped)++;
	v = json_object_get(o, "recent_err_pct");
	if (v && !json_is_null(v)) {
		if (get_real(o, "recent_err_pct", 0, 100 * ERR_CAP, &d)) {
			m->recent_err = d / 100;
			m->recent_n = ERR_WARM;
		} else {
			(*skipped)++;
		}
	}
	v = json_object_get(o, "recent_predictions");
	if (v && !parse_recent_predictions(v, m))
		(*skipped)++;
	v = json_object_get(o, "error_pct");
	if (json_is_object(v))
		parse_errors(v, m, skipped);
	else if (v)
		(*skipped)++;
	if (get_real(o, "prior_scale", SCALE_MIN, SCALE_MAX, &d) && d > 0)
		prof_push_ratio(m, d);
	else if (json_object_get(o, "prior_scale"))
		(*skipped)++;
	prof_model_refit(m, true);
}

static int find_slot(const struct profiler *p, const char *key)
{
	for (uint32_t s = 0; s < p->nslots; s++)
		if (!strcmp(p->slot_key[s], key))
			return (int)s;
	return -1;
}

static bool same_name(const json_t *o, const char *k, const char *v)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && !strcmp(s, v);
}

/* A model this daemon cannot use, kept in the clean form model_json gives;
 * merged with one kept before under the same names. */
static void aside_add(struct profiler *p, const struct model *m, const char *kernel,
                      const char *key, size_t *skipped)
{
	struct model *old = NULL;
	json_t *o = NULL, *e;
	size_t i, at = SIZE_MAX;

	pthread_mutex_lock(&p->aside_lock);
	json_array_foreach(p->aside, i, e)
	{
		if (same_name(e, "kernel", kernel) && same_name(e, "device", key)) {
			at = i;
			break;
		}
	}
	if (at != SIZE_MAX && (old = prof_scratch_new())) {
		size_t ignored = 0;

		parse_model(json_array_get(p->aside, at), old, &ignored);
		model_absorb(old, m);
		o = model_json(old, kernel, key);
	} else if (at == SIZE_MAX && json_array_size(p->aside) < ASIDE_MAX) {
		o = model_json(m, kernel, key);
	}
	if (!o)
		(*skipped)++;
	else if (at != SIZE_MAX)
		json_array_set_new(p->aside, at, o);
	else
		json_array_append_new(p->aside, o);
	pthread_mutex_unlock(&p->aside_lock);
	free(old);
}

static void load_model(struct profiler *p, const json_t *o, size_t *skipped)
{
	const char *kernel = json_string_value(json_object_get(o, "kernel"));
	const char *key = json_string_value(json_object_get(o, "device"));
	struct model *scratch;
	int k, s;

	if (!json_is_object(o) || !name_ok(kernel, NAME_MAX_LEN) || !name_ok(key, CAL_KEY_MAX)) {
		(*skipped)++;
		return;
	}
	k = kernel_lookup(kernel);
	s = find_slot(p, key);
	if (k == KERNEL_NOOP || !(scratch = prof_scratch_new())) {
		(*skipped)++;
		return;
	}
	parse_model(o, scratch, skipped);
	if (k > KERNEL_NOOP && (uint32_t)k < p->nkernels && s >= 0) {
		struct model *m = prof_model(p, (uint32_t)s, (uint32_t)k);

		pthread_mutex_lock(&m->lock);
		model_absorb(m, scratch);
		pthread_mutex_unlock(&m->lock);
	} else if (scratch->samples) {
		aside_add(p, scratch, kernel, key, skipped);
	}
	free(scratch);
}

static void load_link(struct profiler *p, const json_t *o, size_t *skipped)
{
	uint64_t s, t, copies;
	struct link_state *l;
	double bw;

	if (!json_is_object(o) || !get_uint(o, "src", p->nnodes ? p->nnodes - 1 : 0, &s) ||
	    !get_uint(o, "dst", p->nnodes ? p->nnodes - 1 : 0, &t) || !p->nnodes ||
	    !get_real(o, "gbps", GBPS_MIN, GBPS_MAX, &bw) ||
	    !get_uint(o, "copies", COUNT_MAX, &copies)) {
		(*skipped)++;
		return;
	}
	l = &p->link[s][t];
	pthread_mutex_lock(&p->link_lock);
	if (copies > LD(l->copies)) {
		ST(l->copies, copies);
		ST(l->gbps_seen, bw);
	}
	pthread_mutex_unlock(&p->link_lock);
}

void prof_adopt_aside(struct profiler *p, const char *key)
{
	json_t *mine = json_array(), *e;
	size_t i, skipped = 0;
	if (!mine)
		return;
	pthread_mutex_lock(&p->aside_lock);
	for (i = json_array_size(p->aside); i-- > 0;) {
		e = json_array_get(p->aside, i);
		if (same_name(e, "device", key)) {
			json_array_append(mine, e);
			json_array_remove(p->aside, i);
		}
	}
	pthread_mutex_unlock(&p->aside_lock);
	json_array_foreach(mine, i, e) load_model(p, e, &skipped);
	json_decref(mine);
}

int profiler_load_json(struct profiler *p, const json_t *doc, size_t *skipped, char *err,
                       size_t errlen)
{
	const json_t *models = json_object_get(doc, "models");
	const json_t *links = json_object_get(doc, "links");
	const json_t *version = json_object_get(doc, "version");
	size_t dummy = 0, i;
	json_t *e;

	if (!skipped)
		skipped = &dummy;
	*skipped = 0;
	if (!p || !json_is_object(doc)) {
		set_err(err, errlen, "not a model document: not a JSON object");
		return -TDM_EINVAL;
	}
	if (!json_is_integer(version) || json_integer_value(version) != 1) {
		set_err(err, errlen, "not a model document: \"version\" is not 1");
		return -TDM_EINVAL;
	}
	if (!json_is_array(models)) {
		set_err(err, errlen, "not a model document: \"models\" is not an array");
		return -TDM_EINVAL;
	}
	json_array_foreach(models, i, e)
	{
		if (i < DOC_MAX_MODELS)
			load_model(p, e, skipped);
		else
			(*skipped)++;
	}
	if (links && !json_is_array(links))
		(*skipped)++;
	json_array_foreach(links, i, e)
	{
		if (i < DOC_MAX_LINKS)
			load_link(p, e, skipped);
		else
			(*skipped)++;
	}
	return 0;
}
