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
