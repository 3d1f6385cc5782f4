/* kernels/backend.c - backend-independent helpers around the table. */
#include "kernels/backend.h"
#include "base/rng.h"

#include <math.h>

void tsr_backend_destroy(tsr_backend *b) {
    if (b)
        b->iface->destroy(b);
}

size_t tsr_backend_act_size(const tsr_backend *b) {
    return tsr_dtype_block_bytes(b->iface->act_dtype);
}

tsr_status tsr_backend_alloc(tsr_backend *b, size_t bytes, const char *what, void **out) {
    *out = b->iface->alloc(b, bytes ? bytes : 1);
    if (!*out)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: cannot allocate %zu bytes for %s", b->iface->name,
                             bytes, what);
    return TSR_OK;
}

void tsr_backend_free(tsr_backend *b, void *p) {
    if (p)
        b->iface->free(b, p);
}

void *tsr_backend_stream(const tsr_backend *b) {
    return b && b->iface->stream ? b->iface->stream((tsr_backend *)b) : NULL;
}

tsr_status tsr_backend_sync(tsr_backend *b) { return b->iface->sync(b); }

tsr_status tsr_backend_lacks(const tsr_backend *b, const char *op) {
    return tsr_error_set(TSR_ERR_UNSUPPORTED, "backend %s has no %s op", b->iface->name, op);
}

/* ---- LoRA dropout's hash (runtime/model/lora.h defines it; lora_dropout.cu has the
 * device copy of mix and bits) ---- */

static const uint64_t DROPOUT_GOLDEN = 0x9E3779B97F4A7C15ull;
static const uint64_t DROPOUT_SALT = 0xD1B54A32D192ED03ull;

uint64_t tsr_lora_dropout_stream(uint64_t seed, uint64_t key, int layer, int target) {
    uint64_t s = tsr_splitmix64_mix(seed ^ DROPOUT_SALT);
    s = tsr_splitmix64_mix(s ^ key);
    return tsr_splitmix64_mix(s + DROPOUT_GOLDEN * (uint64_t)(1 + (int64_t)layer * 7 + target));
}

uint32_t tsr_lora_dropout_bits(uint64_t stream, int64_t token, int64_t column) {
    const uint64_t row = tsr_splitmix64_mix(stream ^ (uint64_t)token);
    return (uint32_t)(tsr_splitmix64_mix(row + DROPOUT_GOLDEN * (uint64_t)(1 + column)) >> 40);
}

uint32_t tsr_lora_dropout_threshold(float p) {
    if (!(p > 0.0f))
        return 0;
    if (!(p < 1.0f))
        return 1u << 24;
    return (uint32_t)ceil((double)p * 16777216.0); /* exact: p * 2^24 is a double */
}

#ifndef TSR_HAVE_CUDA_BACKEND
/* This build has no CUDA backend (TESSERA_CUDA=OFF or no toolkit). */
tsr_status tsr_backend_cuda_create(int device, tsr_dtype act_dtype, tsr_dtype weight_dtype,
                                   tsr_backend **out) {
    (void)device;
    (void)act_dtype;
    (void)weight_dtype;
    *out = NULL;
    return tsr_error_set(TSR_ERR_UNSUPPORTED,
                         "this build of Tessera has no CUDA backend (configure with "
                         "-DTESSERA_CUDA=ON on a machine with the CUDA toolkit)");
}

int tsr_backend_cuda_device_count(void) { return 0; }

int tsr_backend_has_cuda(void) { return 0; }
#else
int tsr_backend_has_cuda(void) { return 1; }
#endif
