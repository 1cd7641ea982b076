/* A stand-in for tandem-cuda.so that test_cuda_loader loads where CUDA is
 * not needed: its entry point hands out a backend that finds no device, of
 * this seam's ABI version, or (FAKE_ABI_SKEW) of another one. Built as
 * $(BUILD)/tests/fake-cuda-ok.so and fake-cuda-abi.so by the Makefile. */
#include <stdio.h>

#include "backends/backend.h"

#ifndef FAKE_ABI_SKEW
#define FAKE_ABI_SKEW 0
#endif

static int fake_probe(struct backend_probe_params *p, struct backend_device *out, size_t max,
                      size_t *n)
{
	(void)out;
	(void)max;
	*n = 0;
	snprintf(p->note, sizeof(p->note), "fakecuda: no device");
	return 0;
}

static const struct backend_ops fake_ops = {
	.abi_version = BACKEND_ABI_VERSION + FAKE_ABI_SKEW,
	.name = "fakecuda",
	.probe = fake_probe,
};

__attribute__((visibility("default"))) backend_cuda_entry_fn tandem_cuda_backend;

const struct backend_ops *tandem_cuda_backend(void)
{
	return &fake_ops;
}
