/* An expert cache for one accelerator: which routed experts (layer, id)
 * are resident in its memory, within a budget of `cap` experts, and which
 * one leaves when another comes in.
 *
 * Policies (the same interface, the same traces):
 *   lru     least recently used (FreeToken's global LRU);
 *   lfu     least frequently used, ties by recency;
 *   mrs     HybriMoE's Minus Recent Score: per expert S <- a*s + (1-a)*S
 *           at each of its layer's steps (s: its routing weight that step,
 *           0 when not chosen; a = 0.3), the lowest S leaves;
 *   hot     a static set installed at start (Fiddler); nothing comes in;
 *   belady  the optimal bound: the caller supplies each expert's next use;
 *           the one used furthest ahead leaves, and an incoming expert used
 *           later than every resident one is not kept (MIN with bypass);
 *   tandem  the probability that the expert is chosen at its layer's next
 *           step. Each expert's choice, step to step of its layer, is taken
 *           as a two-state Markov chain: chosen again with probability p11
 *           after a step it was chosen, chosen with probability p01 after
 *           one it was not, both counted per expert with a slow decay and
 *           shrunk towards what the layer's pooled chains say of an expert
 *           chosen as often. The least likely leaves (among equals, the one
 *           whose layer comes last); an incoming expert is kept only when
 *           it is likelier than the victim by more than one standard error
 *           of the two estimates (admission).
 *           It sees frequency (per expert, as LFU), recency (the chain's
 *           state, as LRU) and how sticky each expert is, where LRU sees
 *           only recency, LFU only counts and MRS a decayed weight.
 */
#ifndef TDM_PLACEMENT_MOE_CACHE_H
#define TDM_PLACEMENT_MOE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum moe_evict {
	MOE_EVICT_TANDEM = 0,
	MOE_EVICT_LRU,
	MOE_EVICT_LFU,
	MOE_EVICT_MRS,
	MOE_EVICT_HOT,
	MOE_EVICT_BELADY,
	MOE_EVICT_COUNT
};

const char *moe_evict_name(enum moe_evict p);

#define MOE_NEVER UINT64_MAX

struct moe_cache {
	enum moe_evict pol;
	uint32_t layers, experts, cap, n;
	uint64_t now; /* position: step * layers + layer of the last observe */
	uint8_t *in; /* [layer * experts + id]: resident */
	uint8_t *chosen; /* chosen at its layer's last step */
	uint64_t *last; /* position of the last use */
	uint64_t *next; /* belady: position of the next use (MOE_NEVER: none) */
	double *count; /* lfu, tandem: uses (steps chosen) */
	double *chain; /* tandem, 4 per expert: steps chosen, chosen again, not, chosen after not */
	float *score; /* mrs */
	double *rate; /* tandem, per layer: experts chosen per step / experts (decayed) */
	double *pool; /* tandem, 4 per layer: its experts' chain counts summed */
	uint64_t *steps; /* tandem, per layer: steps observed */
};

/* 0, or -1 (bad shape, cap > layers * experts, out of memory). */
int moe_cache_init(struct moe_cache *c, enum moe_evict pol, uint32_t layers, uint32_t experts,
                   uint32_t cap);
void moe_cache_free(struct moe_cache *c);

static inline bool moe_cache_has(const struct moe_cache *c, uint32_t l, uint32_t e)
{
	return c->in[(size_t)l * c->experts + e];
}

/* Records layer l's routing at a step: the n experts chosen (distinct),
 * with their weights (a batch's: mean weight over the step's tokens, 0
 * for tokens that did not choose it). Call once per (step, layer) in
 * order, after looking up and before admitting that layer's experts. */
void moe_cache_observe(struct moe_cache *c, uint64_t step, uint32_t l, const uint16_t *ids,
                       const float *w, uint32_t n);

/* belady: the next position at which (l, e) is used (MOE_NEVER: none). */
void moe_cache_set_next(struct moe_cache *c, uint32_t l, uint32_t e, uint64_t next_pos);

/* Brings (l, e) in, evicting by the policy's score while full; experts of
 * layer `pin_layer` flagged in pin[] (experts bytes; NULL: none) are not
 * evicted (they are in use). force: keep it even where the policy would
 * not (installing a static set; an on-demand load that must stay). Returns
 * true when (l, e) is resident afterwards; *victim gets the evicted one's
 * layer * experts + id, or UINT32_MAX. */
bool moe_cache_admit(struct moe_cache *c, uint32_t l, uint32_t e, uint32_t pin_layer,
                     const uint8_t *pin, bool force, uint32_t *victim);

/* A new budget of cap experts (at most layers * experts): while more are
 * resident, the one the policy's score would evict first leaves (experts
 * of pin_layer flagged in pin[] last: those in use leave only when nothing
 * else is left). victim[] (room for every resident expert; may be NULL)
 * gets each evicted one's layer * experts + id. Returns how many left. */
uint32_t moe_cache_set_cap(struct moe_cache *c, uint32_t cap, uint32_t pin_layer,
                           const uint8_t *pin, uint32_t *victim);

/* tandem's estimate of the probability that (l, e) is chosen at its
 * layer's next step (the prefetch ranking). */
double moe_cache_p_next(const struct moe_cache *c, uint32_t l, uint32_t e);

/* tandem: the long-run rate at which (l, e) is chosen at its layer's
 * steps: the share of all the steps observed (undecayed: the same
 * evidence a profiled hot set is chosen by, and the run's since). */
double moe_cache_rate(const struct moe_cache *c, uint32_t l, uint32_t e);

/* tandem: whether bringing (l, e) in now, in place of the expert
 * moe_cache_admit would evict (pin as there), pays: the chance of use at
 * the next step, less the victim's, times t_saved_ns (what a use in the
 * accelerator's memory saves) beats cost_ns (what the copy costs now), and
 * (l, e)'s long-run rate is above the victim's by two standard errors of
 * the counts. The second test is what keeps a hot expert: one chosen a
 * moment ago is likelier at the next step than a hot one that was not
 * (the chain's stickiness), but the victim stays out for the steps after
 * that one, where it is the likelier. While a slot is free there is no
 * victim: the first test alone (with no counts yet, a cold start, the
 * prior's chance). While (l, e)'s layer has seen too few steps for the
 * counts to tell two experts apart, no swap (the resident expert stays).
 * False when nothing may leave. The simulator's tandem and the daemon's
 * llm prefetch both ask it. */
bool moe_cache_swap_pays(const struct moe_cache *c, uint32_t l, uint32_t e, uint32_t pin_layer,
                         const uint8_t *pin, double t_saved_ns, double cost_ns);

#endif
