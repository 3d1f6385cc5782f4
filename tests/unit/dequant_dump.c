/* tests/unit/dequant_dump.c - test tool: dequantizes a raw file of blocks of
 * one stored type to f32 with tsr_dequantize (or, with --quantize, f32 to
 * blocks with tsr_quantize), for test_dequant.py to compare with gguf-py's
 * NumPy dequantizers and quantizers.
 *
 *   dequant_dump TYPE IN OUT.f32
 *   dequant_dump --quantize TYPE IN.f32 OUT
 *
 * TYPE is a type name ("q4_k") or ggml type id; IN holds a whole number of
 * blocks (or of 32 f32 values); OUT gets the elements as little-endian f32
 * (or the blocks). Not a converter for users: it knows no tensor shapes, only
 * a flat run of blocks. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/status.h"
#include "kernels/dtype.h"

static int type_of(const char *s) {
    for (int t = 0; t < TSR_DTYPE_COUNT; t++)
        if (tsr_dtype_name(t) && !strcmp(tsr_dtype_name(t), s))
            return t;
    char *end;
    long v = strtol(s, &end, 10);
    return *s && !*end && tsr_dtype_name((int)v) ? (int)v : -1;
}

static int quantize(int t, const char *src, const char *dst) {
    char *in = NULL;
    size_t len = 0;
    if (tsr_fs_read_file(src, 0, &in, &len) != TSR_OK) {
        fprintf(stderr, "dequant_dump: %s\n", tsr_error_msg());
        return 1;
    }
    const size_t n = len / sizeof(float), bytes = tsr_dtype_row_bytes(t, n);
    void *out = malloc(bytes ? bytes : 1);
    int rc = 1;
    if (len % sizeof(float) || !bytes || !out)
        fprintf(stderr, "dequant_dump: %zu bytes is not a whole number of %s blocks of f32\n", len,
                tsr_dtype_name(t));
    else if (!tsr_quantize(t, (const float *)in, out, n))
        fprintf(stderr, "dequant_dump: tsr_quantize does not write %s\n", tsr_dtype_name(t));
    else if (tsr_fs_write_file(dst, out, bytes) != TSR_OK)
        fprintf(stderr, "dequant_dump: %s\n", tsr_error_msg());
    else
        rc = 0;
    free(out);
    free(in);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "--quantize")) {
        int t = type_of(argv[2]);
        if (t < 0) {
            fprintf(stderr, "dequant_dump: unknown type '%s'\n", argv[2]);
            return 2;
        }
        return quantize(t, argv[3], argv[4]);
    }
    if (argc != 4) {
        fprintf(stderr, "usage: dequant_dump TYPE IN OUT.f32\n");
        return 2;
    }
    int t = type_of(argv[1]);
    if (t < 0) {
        fprintf(stderr, "dequant_dump: unknown type '%s'\n", argv[1]);
        return 2;
    }
    char *in = NULL;
    size_t len = 0;
    if (tsr_fs_read_file(argv[2], 0, &in, &len) != TSR_OK) {
        fprintf(stderr, "dequant_dump: %s\n", tsr_error_msg());
        return 1;
    }
    size_t bb = tsr_dtype_block_bytes(t), n = len / bb * tsr_dtype_block(t);
    if (len % bb) {
        fprintf(stderr, "dequant_dump: %zu bytes is not a whole number of %s blocks\n", len,
                tsr_dtype_name(t));
        free(in);
        return 1;
    }
    float *out = malloc(n ? n * sizeof *out : 1);
    int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = 0;
    if (!out || fd < 0) {
        perror("dequant_dump");
        rc = 1;
    } else {
        tsr_dequantize(t, in, out, n);
        if (tsr_fs_write_all(fd, out, n * sizeof *out, argv[3]) != TSR_OK) {
            fprintf(stderr, "dequant_dump: %s\n", tsr_error_msg());
            rc = 1;
        }
    }
    if (fd >= 0 && close(fd) != 0)
        rc = 1;
    free(out);
    free(in);
    return rc;
}
