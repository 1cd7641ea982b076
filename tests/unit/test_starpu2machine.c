/* Unit tests for tools/starpu_perfmodel.c (the converter behind
 * starpu2machine): small StarPU 1.3 sampling files written to a temporary
 * directory are converted and the description parsed back with
 * machine_parse; malformed files are rejected with "FILE:LINE: message".
 * When the StarPU files of host "sirocco" are at
 * ../shared/benchmarks/kernels/starpu_perfmodels (from the repository
 * root), they are converted too; otherwise that test skips and says so. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sim/machine.h"
#include "tandem.h"
#include "tools/starpu_perfmodel.h"

#define SIROCCO_DIR "../shared/benchmarks/kernels/starpu_perfmodels"

static char dir[64];

static void put_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void rm_file(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
}

/* A combination as StarPU 1.3 writes it, with nentries history rows. */
static void comb(char *buf, size_t len, int idx, int type, int devid, int nentries,
                 const char *rows)
{
	size_t o = strlen(buf);

	snprintf(buf + o, len - o,
	         "####################\n# COMB_%d\n# number of types devices\n1\n"
	         "####################\n# DEV_0\n# device type (CPU - 0, CUDA - 1, OPENCL - 2, "
	         "MIC - 3)\n%d\n####################\n# DEV_0\n# device id \n%d\n"
	         "####################\n# DEV_0\n# number of cores \n1\n##########\n"
	         "# number of implementations\n1\n#####\n# Model for x_impl0 (Comb%d)\n"
	         "# number of entries\n%d\n"
	         "# sumlnx\tsumlnx2\t\tsumlny\t\tsumlnxlny\talpha\t\tbeta\t\tn\tminx\t\tmaxx\n"
	         "0.000000e+00   \t0.000000e+00   \t0.000000e+00   \t0.000000e+00   \tnan   "
	         "\tnan            \t0\t0              \t0              \n"
	         "# a\t\tb\t\tc\nnan            \tnan            \tnan            \n"
	         "# not multiple-regression-base\n0\n"
	         "# hash\t\tsize\t\tflops\t\tmean (us)\tdev (us)\tsum\t\tsum2\t\tn\n%s\n",
	         idx, type, devid, idx, nentries, rows);
}

static void model_head(char *buf, size_t len, int version, int ncombs)
{
	snprintf(buf, len,
	         "##################\n# Performance Model Version\n%d\n\n####################\n"
	         "# COMBs\n# number of combinations\n%d\n",
	         version, ncombs);
}

/* A combination of two device types (a parallel task): read and left out. */
static const char two_types[] =
        "# number of types devices\n2\n0\n0\n4\n1\n0\n1\n# number of implementations\n1\n"
        "1\n0 0 0 0 nan nan 0 0 0\nnan nan nan\n0\n"
        "d46431bb\t49152\t524288\t1\t0\t1\t1\t1\n";

static int setup(void **state)
{
	static char buf[16384];

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_starpu2machine_XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	put_file("bus_tiny.config", "# Current configuration\n2 # Number of CPUs\n"
	                            "2 # Number of CUDA devices\n0 # Number of OpenCL devices\n"
	                            "0 # Number of MIC devices\n");
	put_file("bus_tiny.bandwidth", "# to 0\t\tto 1\t\tto 2\t\tto 3\t\t\n"
	                               "0.000000e+00\t1.2e+04\t1.1e+04\tnan\n"
	                               "1.0e+04\t0.000000e+00\t5.0e+03\tnan\n"
	                               "9.0e+03\t6.0e+03\t0.000000e+00\tnan\n"
	                               "nan\tnan\tnan\tnan\n");
	put_file("bus_tiny.latency", "# to 0\t\tto 1\t\tto 2\t\tto 3\t\t\n"
	                             "0.000000e+00\t10\t11\tnan\n"
	                             "12\t0.000000e+00\t20\tnan\n"
	                             "13\t21\t0.000000e+00\tnan\n"
	                             "nan\tnan\tnan\tnan\n");
	/* gemm: sizes 3 nb^2 floats; 12345 is no such size */
	model_head(buf, sizeof(buf), 45, 4);
	comb(buf, sizeof(buf), 0, 0, 0, 3,
	     "d46431bb\t49152\t524288\t2.0e+03\t1.0e+02\t0\t0\t50\n"
	     "aaaaaaaa\t196608\t4194304\t1.6e+04\t8.0e+02\t0\t0\t20\n"
	     "bbbbbbbb\t12345\t1\t1\t0\t0\t0\t1");
	comb(buf, sizeof(buf), 1, 1, 0, 1, "d46431bb\t49152\t524288\t100\t10\t0\t0\t10");
	comb(buf, sizeof(buf), 2, 1, 1, 1, "d46431bb\t49152\t524288\t130\t0\t0\t0\t30");
	strcat(buf, two_types);
	put_file("chol_model_gemm.tiny", buf);
	model_head(buf, sizeof(buf), 45, 1);
	comb(buf, sizeof(buf), 0, 0, 0, 1, "cea37d6d\t16384\t87381\t5.0e+02\t5.0e+01\t0\t0\t9");
	put_file("chol_model_potrf.tiny", buf);
	/* LU: doubles; nb 64 is Cholesky's already, nb 32 is not */
	model_head(buf, sizeof(buf), 45, 1);
	comb(buf, sizeof(buf), 0, 0, 0, 2,
	     "11111111\t98304\t0\t9.0e+03\t0\t0\t0\t5\n"
	     "22222222\t24576\t0\t3.0e+02\t3.0e+01\t0\t0\t5");
	put_file("starpu_dlu_lu_model_gemm.tiny", buf);
	model_head(buf, sizeof(buf), 45, 1);
	comb(buf, sizeof(buf), 0, 1, 0, 1, "33333333\t32768\t0\t7.0e+02\t0\t0\t0\t4");
	put_file("starpu_dlu_lu_model_getrf.tiny", buf);
	return 0;
}

static int teardown(void **state)
{
	static const char *const files[] = { "bus_tiny.config",
		                             "bus_tiny.bandwidth",
		                             "bus_tiny.latency",
		                             "chol_model_gemm.tiny",
		                             "chol_model_potrf.tiny",
		                             "starpu_dlu_lu_model_gemm.tiny",
		                             "starpu_dlu_lu_model_getrf.tiny",
		                             "bus_bad.config",
		                             "bus_bad.bandwidth",
		                             "bus_bad.latency",
		                             "chol_model_gemm.bad" };

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		rm_file(files[i]);
	rmdir(dir);
	return 0;
}

/* Converts host with the counts given, parses the result into m. */
static int convert(const char *d, const char *host, int ncpus, int ncuda, struct machine *m,
                   char *err, size_t errlen)
{
	struct spm_options o = { .dir = d, .host = host, .ncpus = ncpus, .ncuda = ncuda };
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	int rc;

	assert_non_null(f);
	rc = spm_convert(&o, f, err, errlen);
	fclose(f);
	if (rc == 0) {
		rc = machine_parse(text, len, host, m, err, errlen);
		if (rc)
			print_error("%s\n%s\n", err, text);
		assert_int_equal(rc, 0);
	}
	free(text);
	return rc;
}

static double tile_ns(const struct machine *m, int kernel, const char *model, double nb,
                      double *spread)
{
	for (uint32_t i = 0; i < m->ncosts; i++) {
		const struct machine_cost *c = &m->costs[i];

		if (c->kernel == kernel && !strcmp(c->model, model) && c->feat.domain == nb) {
			if (spread)
				*spread = c->spread_ns;
			return c->ns;
		}
	}
	return -1;
}

static void test_convert(void **state)
{
	struct machine m;
	char err[1024] = "";
	double spread = -1;

	(void)state;
	assert_int_equal(convert(dir, "tiny", -1, -1, &m, err, sizeof(err)), 0);
	assert_string_equal(m.name, "tiny");
	assert_int_equal(m.ndevices, 4);
	assert_int_equal(m.nnodes, 3);
	assert_string_equal(m.dev[0].name, "cpu0");
	assert_string_equal(m.dev[1].name, "cpu1");
	assert_string_equal(m.dev[0].model, "tiny-cpu");
	assert_string_equal(m.dev[2].name, "gpu0");
	assert_string_equal(m.dev[2].model, "tiny-cuda");
	assert_int_equal(m.dev[2].node, 1);
	assert_int_equal(m.dev[3].node, 2);
	/* MB/s to GB/s, us to ns */
	assert_true(m.link[0][1].gbps == 12 && m.link[0][1].latency_ns == 10000);
	assert_true(m.link[1][0].gbps == 10 && m.link[1][0].latency_ns == 12000);
	assert_true(m.link[1][2].gbps == 5 && m.link[1][2].latency_ns == 20000);
	assert_true(m.link[2][1].gbps == 6 && m.link[2][1].latency_ns == 21000);
	assert_true(m.link[1][2].measured);
	/* gflops from the largest gemm: 2 * 128^3 flops in 16 ms */
	assert_true(fabs(m.dev[0].gemm_gflops - 2.0 * 128 * 128 * 128 / 1.6e7) < 1e-9);
	/* CPU rows */
	assert_true(tile_ns(&m, KERNEL_SGEMM_NT, "tiny-cpu", 64, &spread) == 2e6);
	assert_true(spread == 1e5);
	assert_true(tile_ns(&m, KERNEL_SGEMM_NT, "tiny-cpu", 128, NULL) == 1.6e7);
	assert_true(tile_ns(&m, KERNEL_SPOTRF, "tiny-cpu", 64, NULL) == 5e5);
	/* CUDA: both devices' samples, weighted: (10 * 100 + 30 * 130) / 40 us */
	assert_true(tile_ns(&m, KERNEL_SGEMM_NT, "tiny-cuda", 64, &spread) == 122500);
	assert_true(fabs(spread - sqrt(193.75) * 1000) < 1e-3);
	assert_true(tile_ns(&m, KERNEL_SGETRF, "tiny-cuda", 64, NULL) == 7e5);
	/* LU's gemm: nb 64 was Cholesky's, nb 32 is added */
	assert_true(tile_ns(&m, KERNEL_SGEMM_NT, "tiny-cpu", 32, NULL) == 3e5);
	assert_int_equal(m.ncosts, 6);
	machine_free(&m);

	/* the first CUDA device only: its own times */
	assert_int_equal(convert(dir, "tiny", 1, 1, &m, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 2);
	assert_int_equal(m.nnodes, 2);
	assert_true(tile_ns(&m, KERNEL_SGEMM_NT, "tiny-cuda", 64, NULL) == 1e5);
	machine_free(&m);

	/* no CPU: no CPU rows, and no device figures from them */
	assert_int_equal(convert(dir, "tiny", 0, 2, &m, err, sizeof(err)), 0);
	assert_int_equal(m.ndevices, 2);
	assert_string_equal(m.dev[0].name, "gpu0");
	for (uint32_t i = 0; i < m.ncosts; i++)
		assert_string_equal(m.costs[i].model, "tiny-cuda");
	machine_free(&m);
}

static void expect_convert_error(const char *host, int ncpus, int ncuda, const char *want)
{
	struct machine m;
	char err[1024] = "", full[512];
	int rc = convert(dir, host, ncpus, ncuda, &m, err, sizeof(err));

	snprintf(full, sizeof(full), want, dir);
	if (strcmp(err, full))
		print_error("want: %s\ngot:  %s\n", full, err);
	assert_true(rc < 0);
	assert_string_equal(err, full);
}

static void test_errors(void **state)
{
	char buf[8192];

	(void)state;
	expect_convert_error("tiny", 3, 0,
	                     "%s/bus_tiny.config: the host has 2 CPUs and 2 CUDA "
	                     "devices");
	expect_convert_error("tiny", 0, 0,
	                     "0 CPUs and 0 CUDA devices: a machine has 1 to 64 "
	                     "devices, at most 15 CUDA devices, and this bus file 4 "
	                     "memory nodes");
	expect_convert_error("no/such", -1, -1,
	                     "a host name is 1 to 40 characters A-Z, a-z, 0-9, "
	                     "'.', '_', '-'");
	expect_convert_error("bad", -1, -1,
	                     "%s/bus_bad.config: cannot open: No such file or "
	                     "directory");
	put_file("bus_bad.config", "2 # Number of CPUs\n");
	expect_convert_error("bad", -1, -1,
	                     "%s/bus_bad.config: no \"# Number of CUDA devices\" "
	                     "line");
	put_file("bus_bad.config", "2 # Number of CPUs\n1 # Number of CUDA devices\n");
	put_file("bus_bad.bandwidth", "# to 0 to 1\n0 1e3\n1e3 x\n");
	expect_convert_error("bad", -1, -1, "%s/bus_bad.bandwidth:3: \"x\" is not a number");
	put_file("bus_bad.bandwidth", "# to 0 to 1\n0 1e3\n1e3\n");
	expect_convert_error("bad", -1, -1,
	                     "%s/bus_bad.bandwidth:3: 1 values, the first row has 2");
	put_file("bus_bad.bandwidth", "# to 0 to 1\n0 1e3\nnan 0\n");
	put_file("bus_bad.latency", "0 1\n1 0\n");
	expect_convert_error("bad", -1, -1,
	                     "%s/bus_bad.bandwidth:3: no usable bandwidth from node "
	                     "1 to 0");
	put_file("bus_bad.bandwidth", "# to 0 to 1\n0 1e3\n1e3 0\n");
	model_head(buf, sizeof(buf), 44, 1);
	put_file("chol_model_gemm.bad", buf);
	expect_convert_error("bad", -1, -1,
	                     "%s/chol_model_gemm.bad:3: performance model version "
	                     "44: only version 45 (StarPU 1.3) is read");
	model_head(buf, sizeof(buf), 45, 1);
	comb(buf, sizeof(buf), 0, 0, 0, 1, "d46431bb\t49152\t524288\t2.0e+03\t1.0e+02\t0\t0");
	put_file("chol_model_gemm.bad", buf);
	expect_convert_error("bad", -1, -1,
	                     "%s/chol_model_gemm.bad:39: expected 8 values: hash "
	                     "size flops mean dev sum sum2 n");
	model_head(buf, sizeof(buf), 45, 2);
	comb(buf, sizeof(buf), 0, 0, 0, 1, "d46431bb\t49152\t524288\t2.0e+03\t1.0e+02\t0\t0\t1");
	put_file("chol_model_gemm.bad", buf);
	expect_convert_error("bad", -1, -1,
	                     "%s/chol_model_gemm.bad:39: the file ends where the "
	                     "number of device types was expected");
	model_head(buf, sizeof(buf), 45, 1);
	comb(buf, sizeof(buf), 0, 7, 0, 0, "");
	put_file("chol_model_gemm.bad", buf);
	expect_convert_error("bad", -1, -1,
	                     "%s/chol_model_gemm.bad:16: expected a device type (0 "
	                     "CPU, 1 CUDA, 2 OpenCL, 3 MIC) (an integer in 0..3)");
	/* a valid, empty model */
	model_head(buf, sizeof(buf), 45, 0);
	put_file("chol_model_gemm.bad", buf);
	{
		struct machine m;
		char err[1024];

		assert_int_equal(convert(dir, "bad", -1, -1, &m, err, sizeof(err)), 0);
		assert_int_equal(m.ndevices, 3);
		assert_int_equal(m.ncosts, 0);
		assert_true(m.dev[0].gemm_gflops == 20); /* the default */
		machine_free(&m);
	}
}

static void test_sirocco(void **state)
{
	static const int chol[] = { KERNEL_SPOTRF, KERNEL_STRSM, KERNEL_SSYRK, KERNEL_SGEMM_NT };
	struct machine m;
	char err[1024] = "";
	struct stat st;

	(void)state;
	if (stat(SIROCCO_DIR "/bus_sirocco.config", &st)) {
		printf("# skipped: no StarPU sampling files at %s (run from the repository root "
		       "next to ../shared)\n",
		       SIROCCO_DIR);
		skip();
	}
	if (convert(SIROCCO_DIR, "sirocco", 4, 4, &m, err, sizeof(err)))
		print_error("%s\n", err);
	assert_int_equal(m.ndevices, 8);
	assert_int_equal(m.nnodes, 5);
	for (size_t k = 0; k < sizeof(chol) / sizeof(chol[0]); k++) {
		assert_true(tile_ns(&m, chol[k], "sirocco-cpu", 960, NULL) > 0);
		assert_true(tile_ns(&m, chol[k], "sirocco-cuda", 960, NULL) > 0);
	}
	printf("# sirocco: %u devices, %u cost rows, cuda0 %.0f GFLOP/s, link 0->1 %.2f GB/s\n",
	       m.ndevices, m.ncosts, m.dev[4].gemm_gflops, m.link[0][1].gbps);
	machine_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_convert),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_sirocco),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
