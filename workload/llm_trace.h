/* LLM serving request traces in the Azure LLM inference 2023 format
 * (Patel et al., Splitwise, ISCA 2024; github.com/Azure/AzurePublicDataset):
 *
 *   TIMESTAMP,ContextTokens,GeneratedTokens
 *   2023-11-16 18:15:46.6805900,374,44
 *
 * one request a line: its arrival (a UTC date and time, the fraction of a
 * second optional, up to 9 digits), its prompt length and its output
 * length in tokens. Lines end in LF or CRLF; the header is required.
 * Input is untrusted: every field is checked, arrivals must not go back in
 * time, and errors are one line, "NAME:LINE: message".
 *
 * Also generators of traces with the shape of Azure's conversation and
 * code services (lengths drawn from log-normal distributions fitted to
 * the published medians and means, Poisson arrivals), for tests and for
 * machines without the real files. */
#ifndef TDM_WORKLOAD_LLM_TRACE_H
#define TDM_WORKLOAD_LLM_TRACE_H

#include <stddef.h>
#include <stdint.h>

#define LLM_TRACE_MAX_REQS 10000000u
#define LLM_TRACE_MAX_TOKENS 1048576u /* per prompt and per output */
#define LLM_TRACE_MAX_INPUT ((size_t)512 << 20)

struct llm_trace_req {
	double arrival_ns; /* since the first request, >= 0, non-decreasing */
	uint32_t prompt; /* 1 .. LLM_TRACE_MAX_TOKENS */
	uint32_t output; /* 1 .. LLM_TRACE_MAX_TOKENS */
};

struct llm_trace {
	uint32_t n;
	struct llm_trace_req *req; /* malloc'd */
};

void llm_trace_free(struct llm_trace *t); /* leaves it empty; NULL is fine */

/* 0, -TDM_EINVAL (err: "NAME:LINE: message") or -TDM_ENOMEM; on error *out
 * is empty. max_reqs (0: all) stops after that many requests. */
int llm_trace_parse(const char *text, size_t len, const char *name, uint32_t max_reqs,
                    struct llm_trace *out, char *err, size_t errlen);
int llm_trace_load(const char *path, uint32_t max_reqs, struct llm_trace *out, char *err,
                   size_t errlen);

enum llm_trace_kind { LLM_TRACE_CONV = 0, LLM_TRACE_CODE = 1 };

/* n requests (1 .. LLM_TRACE_MAX_REQS) with the shape of Azure's 2023
 * conversation or code trace, from seed: the same arguments give the same
 * trace everywhere. 0, -TDM_EINVAL or -TDM_ENOMEM. */
int llm_trace_generate(enum llm_trace_kind kind, uint32_t n, uint64_t seed, struct llm_trace *out,
                       char *err, size_t errlen);

#endif
