/* KV admission by predicted peak (Past-Future): the peak of a set of
 * requests, the prediction of remaining outputs from past lengths, and the
 * daemon's answers: device tier while the devices hold the predicted peak,
 * host tier (demoted, not refused) past it, EQUOTA past the quota, every
 * field of the request checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "placement/kv_admit.h"
#include "placement/residency.h"
#include "tests/harness/intake_harness.h"

#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)

static void test_peak(void **state)
{
	(void)state;
	/* A finishes after 10 tokens, B after 100: the peak is when A ends
	 * (110 + 60), below the sum of their final sizes (110 + 150). */
	struct kv_req r[] = { { .used = 50, .bytes_per_token = 1, .remaining = 100 },
		              { .used = 100, .bytes_per_token = 1, .remaining = 10 } };
	assert_int_equal(kv_peak(r, 2), 170);
	/* B alone, larger later: its final size. */
	struct kv_req one = { .used = 50, .bytes_per_token = 2, .remaining = 100 };
	assert_int_equal(kv_peak(&one, 1), 250);
	assert_int_equal(kv_peak(NULL, 0), 0);
	struct kv_req big[] = {
		{ .used = UINT64_MAX - 5, .bytes_per_token = UINT64_MAX, .remaining = 3 },
		{ .used = 7, .bytes_per_token = 1, .remaining = 1 }
	};
	assert_true(kv_peak(big, 2) == UINT64_MAX); /* saturates */
}

static void test_predict(void **state)
{
	(void)state;
	static struct kv_hist h;
	memset(&h, 0, sizeof(h));
	assert_int_equal(kv_predict_remaining(&h, 0, 500), 500); /* no past: the limit */
	for (uint32_t i = 1; i <= 100; i++)
		kv_hist_add(&h, i * 10); /* 10, 20, ..., 1000 */
	uint32_t r = kv_predict_remaining(&h, 0, 5000);
	assert_true(r >= 890 && r <= 910); /* the 0.9 quantile */
	assert_int_equal(kv_predict_remaining(&h, 0, 300), 300); /* clipped to the limit */
	r = kv_predict_remaining(&h, 500, 5000); /* given 500 done: of 510..1000 */
	assert_true(r >= 440 && r <= 460);
	/* Too few longer ones to trust: the limit. */
	assert_int_equal(kv_predict_remaining(&h, 960, 40), 40);
	/* The ring keeps the last KV_HIST_MAX. */
	for (uint32_t i = 0; i < KV_HIST_MAX; i++)
		kv_hist_add(&h, 5);
	assert_int_equal(h.n, KV_HIST_MAX);
	assert_int_equal(kv_predict_remaining(&h, 0, 5000), 5);
}

/* ---- the daemon's answers ------------------------------------------------ */

static int fk_alloc(const struct backend_device *d, uint64_t bytes, void **mem)
{
	(void)d;
	(void)bytes;
	*mem = (void *)0x1000;
	return 0;
}
static void fk_free(const struct backend_device *d, void *mem)
{
	(void)d;
	(void)mem;
}
static const struct backend_ops fk = { .abi_version = BACKEND_ABI_VERSION,
	                               .name = "fake",
	                               .mem_alloc = fk_alloc,
	                               .mem_free = fk_free };

struct fixture {
	struct harness h;
	struct residency res;
	struct backend_device dev;
};

static int setup(void **state)
{
	static struct fixture f;
	memset(&f, 0, sizeof(f));
	if (harness_init(&f.h, 64, 64) != 0)
		return -1;
	residency_init(&f.res);
	f.dev = (struct backend_device){ .name = "fk0", .ops = &fk, .mem_bytes = 100 * MiB };
	residency_add_node(&f.res, &f.dev, 0);
	f.h.env.res = &f.res;
	f.h.cfg.buffer_quota_bytes = 1 * GiB;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	harness_fini(&f->h);
	residency_fini(&f->res);
	return 0;
}

/* The last output length in the client's history. */
static uint32_t last_history(struct harness *h)
{
	const struct kv_hist *k = h->s->kv_hist;
	return k->len[(k->next + KV_HIST_MAX - 1) % KV_HIST_MAX];
}

static int admit(struct harness *h, uint32_t handle, uint64_t bpt, uint32_t ctx, uint32_t max_new,
                 uint32_t tier, struct tdm_kv_admit_reply *r)
{
	struct tdm_kv_admit_req q = { .handle = handle,
		                      .tier = tier,
		                      .bytes_per_token = bpt,
		                      .context_tokens = ctx,
		                      .max_new_tokens = max_new };
	return session_kv_admit(h->s, &q, r);
}

static uint32_t kv_buffer(struct harness *h, uint64_t used)
{
	uint32_t kv;
	struct tdm_buf_grow_reply gr;
	int fd = -1;
	assert_int_equal(session_buffer_reserve(h->s, 4 * GiB, TDM_BUF_KV, &kv), 0);
	if (used) {
		assert_int_equal(session_buffer_grow(h->s, kv, used, &gr, &fd), 0);
		if (fd >= 0)
			close(fd);
	}
	return kv;
}

/* 100 MiB of device memory, requests of 10 MiB context + up to 10 MiB
 * output (1 MiB per token): with no history each is counted at its limit
 * (20 MiB), so five fit on the device and the sixth goes to the host. */
static void test_device_then_host(void **state)
{
	struct fixture *f = *state;
	struct harness *h = &f->h;
	struct tdm_kv_admit_reply r;

	assert_int_equal(admit(h, 0, 0, 0, 0, 0, &r), 0);
	assert_int_equal(r.device_free_bytes, 100 * MiB);
	uint64_t host0 = r.host_free_bytes;
	assert_true(host0 > 900 * MiB && host0 <= GiB);

	uint32_t kv[7];
	for (int i = 0; i < 7; i++) {
		kv[i] = kv_buffer(h, 10 * MiB);
		assert_int_equal(admit(h, kv[i], MiB, 10, 10, TDM_TIER_ANY, &r), 0);
		assert_int_equal(r.predicted_new_tokens, 10);
		assert_int_equal(r.tier, i < 5 ? TDM_TIER_DEVICE : TDM_TIER_HOST);
	}
	assert_int_equal(r.device_free_bytes, 0);
	/* Asking for the host is honoured. */
	uint32_t k8 = kv_buffer(h, MiB);
	assert_int_equal(admit(h, k8, MiB, 1, 1, TDM_TIER_HOST, &r), 0);
	assert_int_equal(r.tier, TDM_TIER_HOST);

	/* The device frees up when device-tier requests end; their lengths
	 * become the history. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(session_buffer_free(h->s, kv[i]), 0);
	assert_int_equal(admit(h, 0, 0, 0, 0, 0, &r), 0);
	assert_int_equal(r.history, 5);
	assert_int_equal(r.device_free_bytes, 100 * MiB);
	/* Re-deciding a host-tier request moves it up now that there is room. */
	assert_int_equal(admit(h, kv[5], MiB, 10, 10, TDM_TIER_ANY, &r), 0);
	assert_int_equal(r.tier, TDM_TIER_DEVICE);
}

/* With a history of short outputs, Past-Future admits more to the device
 * than counting every request at its limit would. */
static void test_history_admits_more(void **state)
{
	struct fixture *f = *state;
	struct harness *h = &f->h;
	struct tdm_kv_admit_reply r;

	/* 20 past requests that ended after 2 tokens of a possible 40. */
	for (int i = 0; i < 20; i++) {
		uint32_t k = kv_buffer(h, 12 * MiB);
		assert_int_equal(admit(h, k, MiB, 10, 40, TDM_TIER_HOST, &r), 0);
		assert_int_equal(session_buffer_free(h->s, k), 0);
	}
	int on_device = 0;
	for (int i = 0; i < 8; i++) {
		uint32_t k = kv_buffer(h, 10 * MiB);
		assert_int_equal(admit(h, k, MiB, 10, 40, TDM_TIER_ANY, &r), 0);
		assert_int_equal(r.history, 20);
		assert_int_equal(r.predicted_new_tokens, 2);
		on_device += r.tier == TDM_TIER_DEVICE;
	}
	/* At their limit (50 MiB each) only two would fit; at 12 MiB, eight. */
	assert_int_equal(on_device, 8);
}

/* A request's KV in four buffers (a layer each, one request id) is
 * admitted through one of them as one request: counted whole (20 MiB at
 * its limit, as test_device_then_host's single buffers), so five fit on
 * the device; its other buffers cannot be admitted apart; its length
 * joins the history from its scaled use. */
static void test_per_request(void **state)
{
	struct fixture *f = *state;
	struct harness *h = &f->h;
	struct tdm_kv_admit_reply r;
	enum { LAYERS = 4 };
	uint32_t kv[7][LAYERS];

	for (int i = 0; i < 7; i++) {
		for (int l = 0; l < LAYERS; l++) {
			kv[i][l] = kv_buffer(h, 10 * MiB / LAYERS);
			session_buffer_set_request(h->s, kv[i][l], 100 + (uint32_t)i);
		}
		assert_int_equal(admit(h, kv[i][0], MiB, 10, 10, TDM_TIER_ANY, &r), 0);
		assert_int_equal(r.tier, i < 5 ? TDM_TIER_DEVICE : TDM_TIER_HOST);
	}
	assert_int_equal(admit(h, kv[0][1], MiB, 10, 10, TDM_TIER_ANY, &r), -TDM_EINVAL);
	/* Request 0 generates 6 tokens (1/4 MiB per layer each), ends. */
	struct tdm_buf_grow_reply gr;
	for (int l = 0; l < LAYERS; l++) {
		int fd = -1;
		assert_int_equal(session_buffer_grow(h->s, kv[0][l], 16 * MiB / LAYERS, &gr, &fd),
		                 0);
		if (fd >= 0)
			close(fd);
	}
	for (int l = 0; l < LAYERS; l++)
		assert_int_equal(session_buffer_free(h->s, kv[0][l]), 0);
	assert_int_equal(admit(h, 0, 0, 0, 0, 0, &r), 0);
	assert_int_equal(r.history, 1);
	assert_int_equal(last_history(h), 6);
}

/* Past the quota: EQUOTA, the buffer not admitted. */
static void test_quota(void **state)
{
	struct fixture *f = *state;
	struct harness *h = &f->h;
	struct tdm_kv_admit_reply r;

	h->cfg.buffer_quota_bytes = 64 * MiB;
	uint32_t a = kv_buffer(h, 10 * MiB);
	assert_int_equal(admit(h, a, MiB, 10, 30, TDM_TIER_ANY, &r), 0);
	uint32_t b = kv_buffer(h, 10 * MiB);
	assert_int_equal(admit(h, b, MiB, 10, 30, TDM_TIER_ANY, &r), -TDM_EQUOTA);
	assert_int_equal(r.tier, 0);
	assert_int_equal(session_buffer_lookup(h->s, b)->kv_tier, 0);
	/* A shorter one fits. */
	assert_int_equal(admit(h, b, MiB, 10, 2, TDM_TIER_ANY, &r), 0);
}

static void test_fields(void **state)
{
	struct fixture *f = *state;
	struct harness *h = &f->h;
	struct tdm_kv_admit_reply r;
	uint32_t kv = kv_buffer(h, 0);
	struct tdm_kv_admit_req q = {
		.handle = kv, .bytes_per_token = 1024, .context_tokens = 4, .max_new_tokens = 4
	};

	q.reserved[1] = 1;
	assert_int_equal(session_kv_admit(h->s, &q, &r), -TDM_EPROTO);
	q.reserved[1] = 0;
	q.tier = 3;
	assert_int_equal(session_kv_admit(h->s, &q, &r), -TDM_EINVAL);
	q.tier = 0;
	assert_int_equal(admit(h, kv, 0, 4, 4, 0, &r), -TDM_EINVAL);
	assert_int_equal(admit(h, kv, 1024, 0, 4, 0, &r), -TDM_EINVAL);
	assert_int_equal(admit(h, kv, 1024, 4, 0, 0, &r), -TDM_EINVAL);
	assert_int_equal(admit(h, kv, GiB, 4, 4, 0, &r), -TDM_ERANGE); /* 8 GiB > capacity */
	assert_int_equal(admit(h, kv, 1, UINT32_MAX, UINT32_MAX, 0, &r), -TDM_ERANGE);
	assert_int_equal(admit(h, kv, UINT64_MAX, 1, 1, 0, &r), -TDM_ERANGE);
	assert_int_equal(admit(h, h->handle[0], 1024, 4, 4, 0, &r), -TDM_EINVAL); /* not growable */
	assert_int_equal(admit(h, 0xdead, 1024, 4, 4, 0, &r), -TDM_EHANDLE);
	assert_int_equal(admit(h, 0, 1024, 0, 0, 0, &r), -TDM_EINVAL); /* asking carries nothing */
	assert_int_equal(admit(h, 0, 0, 0, 0, TDM_TIER_HOST, &r), -TDM_EINVAL);
	assert_int_equal(admit(h, kv, 1024, 4, 4, 0, &r), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peak),
		cmocka_unit_test(test_predict),
		cmocka_unit_test_setup_teardown(test_device_then_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_history_admits_more, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
