/* Device memory that grows in place, through CUDA's virtual memory
 * management: a range of device addresses reserved for the capacity
 * (cuMemAddressReserve), physical chunks created (cuMemCreate) and mapped
 * at its end (cuMemMap, cuMemSetAccess) as the data grows, so that the
 * pointer kernels get never changes and they read one contiguous range.
 *
 * The driver API is not linked: its entry points come through the runtime
 * (cudaGetDriverEntryPointByVersion), so the plugin still needs only the
 * driver at run time. Where the driver lacks them, or the device does not
 * support VMM, cuda_vmm_reserve answers -TDM_EINVAL and residency falls
 * back to whole allocations (reallocated as the data grows). */
#include <cuda.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "backends/cuda/cuda_priv.h"
#include "common/grow.h"
#include "tandem.h"

struct vmm_fns {
	CUresult (*address_reserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
	CUresult (*address_free)(CUdeviceptr, size_t);
	CUresult (*create)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
	                   unsigned long long);
	CUresult (*release)(CUmemGenericAllocationHandle);
	CUresult (*map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
	                unsigned long long);
	CUresult (*unmap)(CUdeviceptr, size_t);
	CUresult (*set_access)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
	CUresult (*granularity)(size_t *, const CUmemAllocationProp *,
	                        CUmemAllocationGranularity_flags);
	CUresult (*attribute)(int *, CUdevice_attribute, CUdevice);
	CUresult (*device_get)(CUdevice *, int);
};

struct vmm_chunk {
	CUmemGenericAllocationHandle handle;
	size_t bytes;
};

/* One reserved range. */
struct vmm_range {
	CUdeviceptr base;
	int ordinal;
	size_t reserved, mapped, granule;
	struct vmm_chunk *chunks;
	size_t nchunks, cap;
	struct vmm_range *next;
};

static pthread_once_t fns_once = PTHREAD_ONCE_INIT;
static struct vmm_fns fns;
static bool fns_ok;
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vmm_range *ranges;

static bool entry(const char *name, void **fn)
{
	enum cudaDriverEntryPointQueryResult q;
	return cudaGetDriverEntryPointByVersion(name, fn, 12000, cudaEnableDefault, &q) ==
	               cudaSuccess &&
	       q == cudaDriverEntryPointSuccess && *fn;
}

static void load_fns(void)
{
	fns_ok = entry("cuMemAddressReserve", (void **)&fns.address_reserve) &&
	         entry("cuMemAddressFree", (void **)&fns.address_free) &&
	         entry("cuMemCreate", (void **)&fns.create) &&
	         entry("cuMemRelease", (void **)&fns.release) &&
	         entry("cuMemMap", (void **)&fns.map) && entry("cuMemUnmap", (void **)&fns.unmap) &&
	         entry("cuMemSetAccess", (void **)&fns.set_access) &&
	         entry("cuMemGetAllocationGranularity", (void **)&fns.granularity) &&
	         entry("cuDeviceGetAttribute", (void **)&fns.attribute) &&
	         entry("cuDeviceGet", (void **)&fns.device_get);
	(void)cudaGetLastError();
}

static CUmemAllocationProp prop_for(int ordinal)
{
	CUmemAllocationProp p = { 0 };
	p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	p.location.id = ordinal;
	return p;
}

static size_t round_up(size_t n, size_t g)
{
	return (n + g - 1) / g * g;
}

/* Unmaps and releases every chunk, frees the addresses and the range. */
static void range_destroy(struct vmm_range *r)
{
	CUdeviceptr at = r->base;
	for (size_t i = 0; i < r->nchunks; i++) {
		(void)fns.unmap(at, r->chunks[i].bytes);
		(void)fns.release(r->chunks[i].handle);
		at += r->chunks[i].bytes;
	}
	(void)fns.address_free(r->base, r->reserved);
	free(r->chunks);
	free(r);
}

int cuda_vmm_reserve(int ordinal, uint64_t capacity, void **mem)
{
	int supported = 0;
	size_t granule = 0;
	CUdevice dev;

	pthread_once(&fns_once, load_fns);
	if (!fns_ok)
		return -TDM_EINVAL;
	if (fns.device_get(&dev, ordinal) != CUDA_SUCCESS ||
	    fns.attribute(&supported, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
	                  dev) != CUDA_SUCCESS ||
	    !supported)
		return -TDM_EINVAL;
	CUmemAllocationProp prop = prop_for(ordinal);
	if (fns.granularity(&granule, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM) != CUDA_SUCCESS ||
	    !granule)
		return -TDM_EINVAL;
	if (capacity > SIZE_MAX - granule)
		return -TDM_ENOMEM;
	struct vmm_range *r = calloc(1, sizeof(*r));
	if (!r)
		return -TDM_ENOMEM;
	r->ordinal = ordinal;
	r->granule = granule;
	r->reserved = round_up(capacity ? capacity : 1, granule);
	if (fns.address_reserve(&r->base, r->reserved, granule, 0, 0) != CUDA_SUCCESS) {
		free(r);
		return -TDM_ENOMEM;
	}
	pthread_mutex_lock(&ranges_lock);
	r->next = ranges;
	ranges = r;
	pthread_mutex_unlock(&ranges_lock);
	*mem = (void *)(uintptr_t)r->base;
	return 0;
}

static struct vmm_range *find(void *mem)
{
	for (struct vmm_range *r = ranges; r; r = r->next)
		if ((void *)(uintptr_t)r->base == mem)
			return r;
	return NULL;
}

int cuda_vmm_grow(void *mem, uint64_t bytes)
{
	pthread_mutex_lock(&ranges_lock);
	struct vmm_range *r = find(mem);
	int err = 0;
	if (!r || bytes > r->reserved) {
		err = -TDM_EINVAL;
		goto out;
	}
	if (bytes <= r->mapped)
		goto out;
	/* Geometric chunks: few handles, at most ~3% or a granule unused. */
	size_t chunk = (size_t)grow_step(r->mapped, bytes, r->granule, r->granule, r->reserved);
	if (r->nchunks == r->cap) {
		size_t ncap = r->cap ? r->cap * 2 : 8;
		struct vmm_chunk *n = realloc(r->chunks, ncap * sizeof(*n));
		if (!n) {
			err = -TDM_ENOMEM;
			goto out;
		}
		r->chunks = n;
		r->cap = ncap;
	}
	CUmemAllocationProp prop = prop_for(r->ordinal);
	CUmemGenericAllocationHandle h;
	if (fns.create(&h, chunk, &prop, 0) != CUDA_SUCCESS) {
		err = -TDM_ENOMEM;
		goto out;
	}
	CUdeviceptr at = r->base + r->mapped;
	CUmemAccessDesc access = { .location = prop.location,
		                   .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	if (fns.map(at, chunk, 0, h, 0) != CUDA_SUCCESS) {
		(void)fns.release(h);
		err = -TDM_ENOMEM;
		goto out;
	}
	if (fns.set_access(at, chunk, &access, 1) != CUDA_SUCCESS) {
		(void)fns.unmap(at, chunk);
		(void)fns.release(h);
		err = -TDM_EDEVICE;
		goto out;
	}
	r->chunks[r->nchunks++] = (struct vmm_chunk){ h, chunk };
	r->mapped += chunk;
out:
	pthread_mutex_unlock(&ranges_lock);
	return err;
}

bool cuda_vmm_free(void *mem)
{
	pthread_mutex_lock(&ranges_lock);
	struct vmm_range **pp = &ranges;
	while (*pp && (void *)(uintptr_t)(*pp)->base != mem)
		pp = &(*pp)->next;
	struct vmm_range *r = *pp;
	if (r)
		*pp = r->next;
	pthread_mutex_unlock(&ranges_lock);
	if (!r)
		return false;
	range_destroy(r);
	return true;
}
