/* metrics_render: the exposition of a status document (daemon/metrics.c).
 * Label values are escaped, histograms are cumulative with +Inf equal to
 * _count, every family has HELP and TYPE, and a document without its
 * arrays is refused. */
#include <event2/buffer.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/metrics.h"

/* A status document as control_status_doc makes one, cut to what the
 * exposition reads: two bounds (1 us, 4 us) and three buckets. */
static json_t *doc_with(const char *device_name)
{
	json_t *doc = json_pack(
	        "{s:f, s:s, s:b, s:[I, I], s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	        "s:I, "
	        "s:I, s:I, s:{s:I, s:I}}}",
	        "uptime_s", 12.5, "policy", "dmda", "policy_fallback", 0, "latency_bounds_ns",
	        (json_int_t)1000, (json_int_t)4000, "counters", "clients", (json_int_t)2,
	        "connections", (json_int_t)3, "connections_refused", (json_int_t)0,
	        "sessions_total", (json_int_t)5, "buffers_live", (json_int_t)1, "buffer_bytes_live",
	        (json_int_t)4096, "graphs_submitted", (json_int_t)7, "graphs_done", (json_int_t)6,
	        "protocol_errors", (json_int_t)0, "tasks_failed", (json_int_t)0, "tasks_canceled",
	        (json_int_t)0, "tasks_in_flight", (json_int_t)1, "queued", (json_int_t)0,
	        "rejected_by_field", "none", (json_int_t)0, "handle", (json_int_t)2);
	json_t *dev = json_pack(
	        "{s:s, s:b, s:I, s:I, s:I, s:{s:I}, s:[I, I, I], s:[I, I, I], s:I, s:I, s:I, s:I, "
	        "s:I, s:I, s:I, s:I, s:I}",
	        "name", device_name, "healthy", 1, "busy_ns", (json_int_t)2500000000, "faults",
	        (json_int_t)0, "staged", (json_int_t)1, "kernels", "sgemm", (json_int_t)9,
	        "wait_hist", (json_int_t)2, (json_int_t)3, (json_int_t)4, "run_hist", (json_int_t)9,
	        (json_int_t)0, (json_int_t)0, "wait_ns", (json_int_t)1500, "run_ns",
	        (json_int_t)900, "predicted", (json_int_t)9, "pred_err_ns", (json_int_t)100,
	        "pred_actual_ns", (json_int_t)900, "mem_used", (json_int_t)1024, "mem_cap",
	        (json_int_t)4096, "bytes_h2d", (json_int_t)10, "bytes_d2h", (json_int_t)20);
	assert_non_null(doc);
	assert_non_null(dev);
	json_object_set_new(doc, "devices", json_pack("[o]", dev));
	return doc;
}

static char *render(json_t *doc)
{
	struct evbuffer *b = evbuffer_new();
	assert_non_null(b);
	assert_int_equal(metrics_render(doc, b), 0);
	size_t n = evbuffer_get_length(b);
	char *text = malloc(n + 1);
	assert_non_null(text);
	assert_int_equal(evbuffer_remove(b, text, n), (int)n);
	text[n] = '\0';
	evbuffer_free(b);
	return text;
}

static void test_label_escaping(void **state)
{
	(void)state;
	json_t *doc = doc_with("gpu\"0\\x\ny");
	char *text = render(doc);
	/* \ -> \\, " -> \", newline -> \n: one line per sample still. */
	assert_non_null(strstr(
	        text, "tandem_tasks_total{device=\"gpu\\\"0\\\\x\\ny\",kernel=\"sgemm\"} 9\n"));
	assert_null(strstr(text, "gpu\"0"));
	free(text);
	json_decref(doc);
}

/* Devices that join and leave: tandem_device_state says the state of each
 * name (a gone one that is available again says available; one found and
 * never used, available), tandem_device_events_total the events. (The
 * document /metrics renders lists each name once: status_view.latest_only.) */
static void test_elastic_devices(void **state)
{
	(void)state;
	json_t *doc = doc_with("cpu1");
	json_t *devs = json_object_get(doc, "devices");
	json_object_set_new(json_array_get(devs, 0), "state", json_string("active"));
	json_t *gone = json_deep_copy(json_array_get(devs, 0));
	json_object_set_new(gone, "name", json_string("clcpu0"));
	json_object_set_new(gone, "state", json_string("gone"));
	json_array_append_new(devs, gone);
	json_object_set_new(doc, "available",
	                    json_pack("[{s:s, s:s}, {s:s, s:s}]", "name", "clcpu0", "state",
	                              "available", "name", "cuda0", "state", "available"));
	json_object_set_new(json_object_get(doc, "counters"), "device_events",
	                    json_pack("{s:I, s:I}", "add", (json_int_t)3, "fault", (json_int_t)1));
	char *text = render(doc);
	assert_non_null(strstr(text, "# TYPE tandem_device_state gauge\n"));
	assert_non_null(strstr(text, "tandem_device_state{device=\"cpu1\",state=\"active\"} 1\n"));
	assert_non_null(strstr(text, "tandem_device_state{device=\"cpu1\",state=\"gone\"} 0\n"));
	assert_non_null(
	        strstr(text, "tandem_device_state{device=\"clcpu0\",state=\"available\"} 1\n"));
	assert_non_null(strstr(text, "tandem_device_state{device=\"clcpu0\",state=\"gone\"} 0\n"));
	assert_non_null(
	        strstr(text, "tandem_device_state{device=\"cuda0\",state=\"available\"} 1\n"));
	/* clcpu0 once, though listed as a device and as available */
	const char *first = strstr(text, "tandem_device_state{device=\"clcpu0\",state=\"active\"}");
	assert_non_null(first);
	assert_null(strstr(first + 1, "tandem_device_state{device=\"clcpu0\",state=\"active\"}"));
	assert_non_null(strstr(text, "tandem_device_events_total{event=\"add\"} 3\n"));
	assert_non_null(strstr(text, "tandem_device_events_total{event=\"fault\"} 1\n"));
	free(text);
	json_decref(doc);
}

static void test_histogram_cumulative(void **state)
{
	(void)state;
	json_t *doc = doc_with("cpu0");
	char *text = render(doc);
	assert_non_null(strstr(text, "# TYPE tandem_task_queue_wait_seconds histogram\n"));
	assert_non_null(strstr(
	        text, "tandem_task_queue_wait_seconds_bucket{device=\"cpu0\",le=\"1e-06\"} 2\n"
	              "tandem_task_queue_wait_seconds_bucket{device=\"cpu0\",le=\"4e-06\"} 5\n"
	              "tandem_task_queue_wait_seconds_bucket{device=\"cpu0\",le=\"+Inf\"} 9\n"
	              "tandem_task_queue_wait_seconds_sum{device=\"cpu0\"} 0.000001500\n"
	              "tandem_task_queue_wait_seconds_count{device=\"cpu0\"} 9\n"));
	assert_non_null(
	        strstr(text, "tandem_device_busy_seconds_total{device=\"cpu0\"} 2.500000000\n"));
	assert_non_null(strstr(text, "tandem_graphs_rejected_total{reason=\"handle\"} 2\n"));
	assert_non_null(strstr(text,
	                       "tandem_transfer_bytes_total{device=\"cpu0\",direction=\"device_"
	                       "to_host\"} 20\n"));
	assert_non_null(strstr(text, "tandem_clients 2\n"));
	assert_non_null(strstr(text, "tandem_policy_info{policy=\"dmda\"} 1\n"));
	free(text);
	json_decref(doc);
}

/* Each sample's family was announced by HELP and TYPE before it. */
static void test_help_and_type(void **state)
{
	(void)state;
	json_t *doc = doc_with("cpu0");
	char *text = render(doc);
	size_t samples = 0;
	for (char *l = text; *l;) {
		char *end = strchr(l, '\n');
		assert_non_null(end);
		if (*l != '#') {
			char name[128], help[160], type[160];
			size_t n = strcspn(l, "{ ");
			assert_true(n < sizeof(name));
			memcpy(name, l, n);
			name[n] = '\0';
			/* a histogram's series belong to its family */
			static const char *const suffixes[] = { "_bucket", "_sum", "_count" };
			for (size_t s = 0; s < 3; s++) {
				size_t sl = strlen(suffixes[s]);
				if (n > sl && !strcmp(name + n - sl, suffixes[s]) &&
				    strstr(text, "_seconds histogram")) {
					char fam[128];
					snprintf(fam, sizeof(fam), "# TYPE %.*s histogram",
					         (int)(n - sl), name);
					if (strstr(text, fam))
						name[n - sl] = '\0';
				}
			}
			snprintf(help, sizeof(help), "# HELP %s ", name);
			snprintf(type, sizeof(type), "# TYPE %s ", name);
			char *h = strstr(text, help), *t = strstr(text, type);
			if (!h || !t)
				print_error("no HELP/TYPE for %s\n", name);
			assert_true(h && t && h < l && t < l);
			samples++;
		}
		l = end + 1;
	}
	assert_true(samples > 20);
	free(text);
	json_decref(doc);
}

/* The llm policy's MoE telemetry (the status doc's "moe"): per-layer
 * counters labelled by layer, the cache-pays gauge; nothing without it. */
static void test_moe_section(void **state)
{
	(void)state;
	json_t *doc = doc_with("cpu0");
	char *text = render(doc);
	assert_null(strstr(text, "tandem_moe_"));
	free(text);
	json_object_set_new(
	        doc, "moe",
	        json_pack("{s:I, s:f, s:f, s:b, s:I, s:I, s:I, s:[{s:i, s:I, s:I, s:I}, {s:i, "
	                  "s:I, s:I, s:I}]}",
	                  "splits", (json_int_t)4, "saved_ns", 2e6, "load_ns", 5e5, "cache_pays", 1,
	                  "decide_ns_max", (json_int_t)900, "cached", (json_int_t)5, "cache_cap",
	                  (json_int_t)12, "layers", "layer", 0, "lookups", (json_int_t)8, "hits",
	                  (json_int_t)3, "load_bytes", (json_int_t)4096, "layer", 1, "lookups",
	                  (json_int_t)6, "hits", (json_int_t)6, "load_bytes", (json_int_t)0));
	text = render(doc);
	assert_non_null(strstr(text, "tandem_moe_expert_lookups_total{layer=\"0\"} 8\n"
	                             "tandem_moe_expert_lookups_total{layer=\"1\"} 6\n"));
	assert_non_null(strstr(text, "tandem_moe_expert_hits_total{layer=\"0\"} 3\n"));
	assert_non_null(strstr(text, "tandem_moe_expert_load_bytes_total{layer=\"0\"} 4096\n"));
	assert_non_null(strstr(text, "tandem_moe_cache_pays 1\n"));
	assert_non_null(strstr(text, "tandem_moe_cached_experts 5\n"));
	assert_non_null(strstr(text, "tandem_moe_cache_capacity_experts 12\n"));
	assert_non_null(strstr(text, "tandem_moe_saved_seconds_total 0.002000000\n"));
	free(text);
	/* The accelerator's split between KV and experts, and the prefetch. */
	json_t *moe = json_object_get(doc, "moe");
	json_object_set_new(moe, "budget_bytes", json_integer(1 << 20));
	json_object_set_new(moe, "kv_bytes", json_integer(1 << 18));
	json_object_set_new(moe, "expert_bytes", json_integer(1 << 19));
	json_object_set_new(moe, "prefetch_bytes", json_integer(8192));
	json_object_set_new(moe, "prefetch_used_bytes", json_integer(4096));
	json_object_set_new(moe, "prefetch_wasted_bytes", json_integer(2048));
	text = render(doc);
	assert_non_null(strstr(text, "tandem_moe_accel_budget_bytes 1048576\n"));
	assert_non_null(strstr(text, "tandem_moe_accel_kv_bytes 262144\n"));
	assert_non_null(strstr(text, "tandem_moe_accel_expert_bytes 524288\n"));
	assert_non_null(strstr(text, "tandem_moe_prefetch_bytes_total 8192\n"));
	assert_non_null(strstr(text, "tandem_moe_prefetch_used_bytes_total 4096\n"));
	assert_non_null(strstr(text, "tandem_moe_prefetch_wasted_bytes_total 2048\n"));
	free(text);
	json_decref(doc);
}

static void test_refuses_partial_document(void **state)
{
	(void)state;
	struct evbuffer *b = evbuffer_new();
	json_t *doc = json_pack("{s:f}", "uptime_s", 1.0);
	assert_int_equal(metrics_render(doc, b), -1);
	json_decref(doc);
	evbuffer_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_label_escaping),
		cmocka_unit_test(test_elastic_devices),
		cmocka_unit_test(test_histogram_cumulative),
		cmocka_unit_test(test_help_and_type),
		cmocka_unit_test(test_moe_section),
		cmocka_unit_test(test_refuses_partial_document),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
