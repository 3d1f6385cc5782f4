/* shard/safetensors_write.c - the safetensors writer (shard/safetensors_write.h).
 * The JSON header is built with jansson, which keeps keys in insertion
 * order. */
#include "shard/safetensors_write.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/fs.h"
#include "kernels/dtype.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "shard/safetensors_write.c writes tensors as host bytes: little-endian hosts only"
#endif

/* The format's name and element size of `dtype`; NULL when not writable. */
static const char *dtype_name(int dtype, size_t *esz) {
    switch (dtype) {
    case TSR_F32: *esz = 4; return "F32";
    case TSR_F16: *esz = 2; return "F16";
    case TSR_BF16: *esz = 2; return "BF16";
    default: *esz = 0; return NULL;
    }
}

uint64_t tsr_st_out_nbytes(const tsr_st_out_tensor *t) {
    size_t esz;
    dtype_name(t->dtype, &esz);
    uint64_t n = esz;
    for (uint32_t d = 0; d < t->n_dims && d < TSR_ST_MAX_DIMS; d++)
        n *= t->shape[d];
    return n;
}

tsr_status tsr_safetensors_header(const tsr_st_out_tensor *t, size_t n, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    tsr_status s = TSR_OK;
    json_t *hdr = json_object(), *meta = json_object();
    char *text = NULL;
    int bad = !hdr || !meta;
    bad = bad || json_object_set_new(meta, "format", json_string("pt"));
    bad = bad || json_object_set(hdr, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        size_t esz;
        const char *dt = dtype_name(t[i].dtype, &esz);
        if (!dt || t[i].n_dims < 1 || t[i].n_dims > TSR_ST_MAX_DIMS) {
            s = tsr_error_set(TSR_ERR_INVALID, "safetensors: tensor '%s' has dtype %d and %u dims",
                              t[i].name, t[i].dtype, t[i].n_dims);
            goto cleanup;
        }
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t[i].n_dims && shape; d++)
            if (json_array_append_new(shape, json_integer((json_int_t)t[i].shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        uint64_t nb = tsr_st_out_nbytes(&t[i]);
        json_t *ent = shape ? json_pack("{s:s, s:o, s:[I,I]}", "dtype", dt, "shape", shape,
                                        "data_offsets", (json_int_t)off, (json_int_t)(off + nb))
                            : NULL;
        bad = !ent || json_object_set_new(hdr, t[i].name, ent);
        off += nb;
    }
    if (bad) { /* jansson refuses keys that are not UTF-8 */
        s = tsr_error_set(TSR_ERR_INVALID,
                          "safetensors: out of memory, or a tensor name is not valid UTF-8");
        goto cleanup;
    }
    text = json_dumps(hdr, JSON_COMPACT);
    if (!text) {
        s = tsr_error_set(TSR_ERR_NOMEM, "safetensors: out of memory for the header");
        goto cleanup;
    }
    /* 8-byte length, then the header padded with spaces so the data section
     * starts at a multiple of 8. */
    size_t hl = strlen(text), padded = (hl + 7) / 8 * 8;
    char *buf = malloc(8 + padded);
    if (!buf) {
        s = tsr_error_set(TSR_ERR_NOMEM, "safetensors: out of memory for the header");
        goto cleanup;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    *out = buf;
    *len = 8 + padded;
cleanup:
    free(text);
    json_decref(meta);
    json_decref(hdr);
    return s;
}

tsr_status tsr_safetensors_write(const char *path, const tsr_st_out_tensor *t, size_t n) {
    char *head;
    size_t hl;
    tsr_status s = tsr_safetensors_header(t, n, &head, &hl);
    if (s != TSR_OK)
        return tsr_error_wrap(s, "%s", path);
    int fd;
    s = tsr_fs_create(path, &fd);
    if (s == TSR_OK) {
        s = tsr_fs_write_all(fd, head, hl, path);
        for (size_t i = 0; i < n && s == TSR_OK; i++)
            s = tsr_fs_write_all(fd, t[i].data, (size_t)tsr_st_out_nbytes(&t[i]), path);
        s = tsr_fs_close_synced(fd, path, s);
    }
    free(head);
    return s;
}
