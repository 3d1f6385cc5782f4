/* kernels/backend.c - backend-independent helpers around the table. */
#include "kernels/backend.h"

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

tsr_status tsr_backend_sync(tsr_backend *b) {
    return b->iface->sync(b);
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

int tsr_backend_cuda_device_count(void) {
    return 0;
}

int tsr_backend_has_cuda(void) {
    return 0;
}
#else
int tsr_backend_has_cuda(void) {
    return 1;
}
#endif
