/* An expert cache for one accelerator (moe_cache.h). */
#include "placement/moe_cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* HybriMoE's MRS decay (our reading of arXiv 2504.05897; its repository
 * gives no other value we could check). */
#define MRS_ALPHA 0.3f
/* tandem: the chain's counts decay by this per step of the layer (a
 * memory of about 1000 steps: a boundary expert's rate differs from its
 * neighbour's by a few hundredths, which 200 steps cannot tell apart). An
 * expert's rate is shrunk towards the layer's with the weight of
 * CHAIN_PRIOR steps, its transition probabilities towards the layer's
 * pooled stickiness with the weight of POOL_PRIOR steps. */
#define CHAIN_DECAY 0.999
#define CHAIN_PRIOR 2.0
#define POOL_PRIOR 10.0
/* tandem: how many standard errors of the two estimates an incoming
 * expert's probability must be above the victim's. */
#define ADMIT_SIGMAS 1.0
/* tandem's prefetch swap: how many standard errors the newcomer's long-run
 * rate must be above the victim's (about 95% one-sided). */
#define SWAP_SIGMAS 2.0

static const char *const evict_names[MOE_EVICT_COUNT] = { "tandem", "lru", "lfu",
	                                                  "mrs",    "hot", "belady" };

const char *moe_evict_name(enum moe_evict p)
{
	return (unsigned)p < MOE_EVICT_COUNT ? evict_names[p] : "?";
}

int moe_cache_init(struct moe_cache *c, enum moe_evict pol, uint32_t layers, uint32_t experts,
                   uint32_t cap)
{
	memset(c, 0, sizeof(*c));
	if ((unsigned)pol >= MOE_EVICT_COUNT || !layers || !experts || layers > 4096 ||
	    experts > 4096 || cap > layers * experts)
		return -1;
	size_t n = (size_t)layers * experts;
	c->pol = pol;
	c->layers = layers;
	c->experts = experts;
	c->cap = cap;
	c->in = calloc(n, 1);
	c->chosen = calloc(n, 1);
	c->last = calloc(n, sizeof(*c->last));
	c->next = malloc(n * sizeof(*c->next));
	c->count = malloc(n * sizeof(*c->count));
	c->score = calloc(n, sizeof(*c->score));
	c->chain = calloc(4 * n, sizeof(*c->chain));
	c->rate = malloc(layers * sizeof(*c->rate));
	c->pool = calloc(4 * (size_t)layers, sizeof(*c->pool));
	c->steps = calloc(layers, sizeof(*c->steps));
	if (!c->in || !c->chosen || !c->last || !c->next || !c->count || !c->score || !c->chain ||
	    !c->rate || !c->steps || !c->pool) {
		moe_cache_free(c);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		c->next[i] = MOE_NEVER;
		c->count[i] = 0;
	}
	/* No routing seen yet: a tenth of the experts a step. */
	for (uint32_t l = 0; l < layers; l++)
		c->rate[l] = 0.1;
	return 0;
}

void moe_cache_free(struct moe_cache *c)
{
	free(c->in);
	free(c->chosen);
	free(c->last);
	free(c->next);
	free(c->count);
	free(c->score);
	free(c->chain);
	free(c->rate);
	free(c->pool);
	free(c->steps);
	memset(c, 0, sizeof(*c));
}

void moe_cache_observe(struct moe_cache *c, uint64_t step, uint32_t l, const uint16_t *ids,
                       const float *w, uint32_t n)
{
	const uint32_t E = c->experts;
	const size_t base = (size_t)l * E;
	uint64_t pos = step * c->layers + l;

	if (l >= c->layers)
		return;
	c->now = pos;
	if (c->pol == MOE_EVICT_TANDEM) {
		/* Each expert's chain: its state at the last step, and whether
		 * it is chosen now. */
		static _Thread_local uint8_t now[4096];
		memset(now, 0, E);
		for (uint32_t k = 0; k < n; k++)
			if (ids[k] < E)
				now[ids[k]] = 1;
		double *pool = c->pool + 4 * (size_t)l;
		memset(pool, 0, 4 * sizeof(*pool));
		for (uint32_t e = 0; e < E; e++) {
			double *ch = c->chain + 4 * (base + e);
			for (int j = 0; j < 4; j++)
				ch[j] *= CHAIN_DECAY;
			ch[c->chosen[base + e] ? 0 : 2] += 1;
			ch[c->chosen[base + e] ? 1 : 3] += now[e];
			for (int j = 0; j < 4; j++)
				pool[j] += ch[j];
		}
		/* The decayed mean over the steps seen (not a moving average
		 * started at the guess of 0.1, which takes ~1/(1 - decay) steps
		 * to forget it). */
		c->rate[l] = (pool[1] + pool[3]) / (pool[0] + pool[2]);
		c->steps[l]++;
	}
	if (c->pol == MOE_EVICT_MRS)
		for (uint32_t e = 0; e < E; e++)
			c->score[base + e] *= 1 - MRS_ALPHA;
	memset(c->chosen + base, 0, E);
	for (uint32_t k = 0; k < n; k++) {
		if (ids[k] >= E)
			continue;
		size_t i = base + ids[k];
		c->chosen[i] = 1;
		c->last[i] = pos;
		if (c->pol == MOE_EVICT_LFU || c->pol == MOE_EVICT_TANDEM)
			c->count[i] += 1;
		else if (c->pol == MOE_EVICT_MRS)
			c->score[i] += MRS_ALPHA * (w ? w[k] : 1.0f);
	}
}

void moe_cache_set_next(struct moe_cache *c, uint32_t l, uint32_t e, uint64_t next_pos)
{
	if (l < c->layers && e < c->experts)
		c->next[(size_t)l * c->experts + e] = next_pos;
}

/* tandem: the chain's transition probabilities, each shrunk towards what
 * the layer says of an expert chosen as often as this one. The layer's
 * stickiness rho comes from its experts' chains pooled (a token keeps an
 * expert of the step before with probability rho, and otherwise chooses
 * it at a rate q): p11 = rho + (1 - rho) q, p01 = q, with q the rate that
 * gives the expert's own long-run rate pi (pi = q / (1 - rho + rho q)).
 * Before the layer has shown how sticky it is (CHAIN_PRIOR steps per
 * expert), a chosen expert is taken to be halfway between the layer's
 * rate and certain to come back. */
static void chain_of(const struct moe_cache *c, size_t i, double *p11, double *p01)
{
	const double *ch = c->chain + 4 * i, *pool = c->pool + 4 * (i / c->experts);
	const double r = c->rate[i / c->experts], w = CHAIN_PRIOR * c->experts;
	double a11 = (pool[1] + w * (r + (1 - r) / 2)) / (pool[0] + w);
	double a01 = (pool[3] + w * r) / (pool[2] + w);
	double rho = a01 < 1 ? fmin(fmax((a11 - a01) / (1 - a01), 0), 1) : 0;
	double pi = (ch[1] + ch[3] + CHAIN_PRIOR * r) / (ch[0] + ch[2] + CHAIN_PRIOR);
	double q = rho * pi < 1 ? pi * (1 - rho) / (1 - rho * pi) : pi;
	*p11 = (ch[1] + POOL_PRIOR * (rho + (1 - rho) * q)) / (ch[0] + POOL_PRIOR);
	*p01 = (ch[3] + POOL_PRIOR * q) / (ch[2] + POOL_PRIOR);
	*p11 = fmin(fmax(*p11, 1e-6), 1);
	*p01 = fmin(fmax(*p01, 1e-6), 1);
}

/* The standard error of (l, e)'s p_next: its own transitions out of its
 * present state, with the prior's weight. */
static double p_next_se(const struct moe_cache *c, size_t i, double p)
{
	const double *ch = c->chain + 4 * i;
	return sqrt(p * (1 - p) / ((c->chosen[i] ? ch[0] : ch[2]) + POOL_PRIOR));
}

double moe_cache_p_next(const struct moe_cache *c, uint32_t l, uint32_t e)
{
	size_t i = (size_t)l * c->experts + e;
	double p11, p01;

	chain_of(c, i, &p11, &p01);
	return c->chosen[i] ? p11 : p01;
}

/* tandem: the probability of use at the layer's next step; among equals
 * the expert whose layer comes last leaves first. */
static double tandem_key(const struct moe_cache *c, size_t i)
{
	const uint32_t L = c->layers, l = (uint32_t)(i / c->experts);
	uint32_t ahead = (l + L - (uint32_t)(c->now % L) - 1) % L;
	return -moe_cache_p_next(c, l, (uint32_t)(i % c->experts)) + 1e-9 * ahead;
}

/* Larger: leaves first. */
static double evict_key(const struct moe_cache *c, size_t i)
{
	switch (c->pol) {
	case MOE_EVICT_LRU: return -(double)c->last[i];
	case MOE_EVICT_LFU: return -c->count[i] * 1e12 - (double)c->last[i] * 1e-6;
	case MOE_EVICT_MRS: return -(double)c->score[i] * 1e12 - (double)c->last[i] * 1e-6;
	case MOE_EVICT_BELADY: return c->next[i] == MOE_NEVER ? INFINITY : (double)c->next[i];
	case MOE_EVICT_TANDEM: return tandem_key(c, i);
	default: return 0;
	}
}

uint32_t moe_cache_set_cap(struct moe_cache *c, uint32_t cap, uint32_t pin_layer,
                           const uint8_t *pin, uint32_t *victim)
{
	const size_t n = (size_t)c->layers * c->experts;
	uint32_t out = 0;

	c->cap = cap < n ? cap : (uint32_t)n;
	while (c->n > c->cap) {
		size_t best = n;
		double key = -INFINITY;
		for (int pass = 0; pass < 2 && best == n; pass++)
			for (size_t i = 0; i < n; i++) {
				if (!c->in[i] || (pass == 0 && pin && i / c->experts == pin_layer &&
				                  pin[i % c->experts]))
					continue;
				double k = evict_key(c, i);
				if (best == n || k > key) {
					best = i;
					key = k;
				}
			}
		c->in[best] = 0;
		c->n--;
		if (victim)
			victim[out] = (uint32_t)best;
		out++;
	}
	return out;
}

double moe_cache_rate(const struct moe_cache *c, uint32_t l, uint32_t e)
{
	if (l >= c->layers || e >= c->experts || !c->steps[l])
		return 0;
	return c->count[(size_t)l * c->experts + e] / (double)c->steps[l];
}

/* The expert moe_cache_admit would evict (pin as there), or n. */
static size_t victim_of(const struct moe_cache *c, uint32_t pin_layer, const uint8_t *pin)
{
	const size_t n = (size_t)c->layers * c->experts;
	size_t best = n;
	double key = -INFINITY;

	for (size_t i = 0; i < n; i++) {
		if (!c->in[i] || (pin && i / c->experts == pin_layer && pin[i % c->experts]))
			continue;
		double k = evict_key(c, i);
		if (best == n || k > key) {
			best = i;
			key = k;
		}
	}
	return best;
}

bool moe_cache_swap_pays(const struct moe_cache *c, uint32_t l, uint32_t e, uint32_t pin_layer,
                         const uint8_t *pin, double t_saved_ns, double cost_ns)
{
	if (l >= c->layers || e >= c->experts)
		return false;
	if (c->n < c->cap) /* a free slot: nothing leaves, only the copy is at stake */
		return moe_cache_p_next(c, l, e) * t_saved_ns > cost_ns;
	size_t v = victim_of(c, pin_layer, pin);
	if (v == (size_t)c->layers * c->experts)
		return false; /* everything resident is in use */
	uint32_t vl = (uint32_t)(v / c->experts), ve = (uint32_t)(v % c->experts);
	double pv = moe_cache_p_next(c, vl, ve), rv = moe_cache_rate(c, vl, ve);
	/* The rates' difference must stand above the noise of counting them
	 * (SWAP_SIGMAS standard errors over the n steps seen): a swap on a
	 * difference of a count or two is a coin toss that costs a copy and
	 * the victim's uses after. While n <= SWAP_SIGMAS^2 / 2 the counts
	 * cannot tell any two experts apart (even chosen at every step
	 * against none is within SWAP_SIGMAS standard errors at the widest
	 * variance, a rate of 1/2), yet the plug-in variance, 0 at rates 0
	 * and 1, would pass one step against none: no swap then, the resident
	 * expert stays until the counts show the newcomer hotter. */
	double rx = moe_cache_rate(c, l, e), n = (double)c->steps[l];
	if (n <= SWAP_SIGMAS * SWAP_SIGMAS / 2)
		return false;
	return (moe_cache_p_next(c, l, e) - pv) * t_saved_ns > cost_ns &&
	       rx - rv > SWAP_SIGMAS * sqrt((rx * (1 - rx) + rv * (1 - rv)) / n);
}

bool moe_cache_admit(struct moe_cache *c, uint32_t l, uint32_t e, uint32_t pin_layer,
                     const uint8_t *pin, bool force, uint32_t *victim)
{
	const size_t n = (size_t)c->layers * c->experts;
	const size_t me = (size_t)l * c->experts + e;

	if (victim)
		*victim = UINT32_MAX;
	if (l >= c->layers || e >= c->experts || !c->cap)
		return false;
	if (c->in[me])
		return true;
	if (c->n < c->cap) {
		if (c->pol == MOE_EVICT_HOT && !force)
			return false;
		c->in[me] = 1;
		c->n++;
		return true;
	}
	if (c->pol == MOE_EVICT_HOT)
		return false;
	size_t best = victim_of(c, pin_layer, pin);
	if (best == n)
		return false; /* everything resident is in use */
	/* Admission: MIN keeps the incoming expert only when it is needed
	 * before the victim; tandem when it is likelier to be chosen than the
	 * victim by more than the noise of the two estimates. A swap on a
	 * difference within the noise is a coin toss that costs the victim's
	 * next use (it stays out until then); a fixed margin instead refuses
	 * the sure wins of a sticky layer (a chosen expert far likelier than
	 * any other) while its estimates are young. */
	double key = evict_key(c, best);
	if (!force && c->pol == MOE_EVICT_BELADY && evict_key(c, me) >= key)
		return false;
	if (!force && c->pol == MOE_EVICT_TANDEM) {
		double pm = -evict_key(c, me), pv = -key;
		if (pm - pv <= ADMIT_SIGMAS * hypot(p_next_se(c, me, pm), p_next_se(c, best, pv)))
			return false;
	}
	c->in[best] = 0;
	c->in[me] = 1;
	if (victim)
		*victim = (uint32_t)best;
	return true;
}
