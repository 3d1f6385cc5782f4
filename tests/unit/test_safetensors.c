/* tests/unit/test_safetensors.c - unit tests for shard/safetensors.
 *
 * Writes small safetensors files (and sharded checkpoint directories) into a
 * fresh mkdtemp directory, then checks round trips of f32/f16/bf16 data,
 * every corruption the reader must refuse (status and message), and a seeded
 * mutation loop that feeds thousands of damaged images through
 * tsr_safetensors_open_memory (run it under ASan/UBSan to catch overreads).
 *
 * What it is not: a test of model loading; it knows no tensor names. Exits 0
 * on success, 1 with a message on the first failure. */
#include "shard/safetensors.h"
#include "shard/safetensors_write.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/dtype.h"
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

/* ---- helpers ----------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len;
} buf_t;

/* An image: le64(len(header)) + header + `pad` spaces + data. */
static buf_t make_image(const char *header, size_t pad, const void *data, size_t data_len) {
    size_t hl = strlen(header) + pad;
    buf_t b;
    b.len = 8 + hl + data_len;
    b.p = tu_xmalloc(b.len);
    for (int i = 0; i < 8; i++)
        b.p[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b.p + 8, header, strlen(header));
    memset(b.p + 8 + strlen(header), ' ', pad);
    if (data_len)
        memcpy(b.p + 8 + hl, data, data_len);
    return b;
}

/* make_image with a zero-filled data section of `data_len` bytes. */
static buf_t make_image_zero(const char *header, size_t data_len) {
    void *z = calloc(1, data_len ? data_len : 1);
    CHECK(z, "calloc");
    buf_t b = make_image(header, 0, z, data_len);
    free(z);
    return b;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = tu_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *dir, const char *name, const void *data, size_t len) {
    char *path = join(dir, name);
    FILE *fp = fopen(path, "wb");
    CHECK(fp, "cannot create %s", path);
    CHECK(len == 0 || fwrite(data, 1, len, fp) == len, "short write to %s", path);
    CHECK(fclose(fp) == 0, "close %s", path);
    free(path);
}

static void write_text(const char *dir, const char *name, const char *text) {
    write_file(dir, name, text, strlen(text));
}

static char *make_subdir(const char *root, const char *name) {
    char *p = join(root, name);
    CHECK(mkdir(p, 0700) == 0, "mkdir %s", p);
    return p;
}

/* Checks that the memory image is refused with `want` and messages. */
#define CHECK_IMAGE_ERR(img, want, ...)                                                            \
    do {                                                                                           \
        tsr_safetensors_t *st_ = (tsr_safetensors_t *)1;                                           \
        CHECK_ERR(tsr_safetensors_open_memory((img).p, (img).len, "img.safetensors", &st_), want,  \
                  "img.safetensors", __VA_ARGS__);                                                 \
        CHECK(st_ == NULL, "handle not NULL on error");                                            \
        free((img).p);                                                                             \
    } while (0)

/* ---- a valid file ------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *dtype;
    size_t elem;
    int n_dims;
    uint64_t shape[TSR_ST_MAX_DIMS];
    uint8_t *bytes;
    size_t nbytes;
    uint64_t offset;
} spec_t;

typedef struct {
    spec_t t[8];
    int n;
    char *header;
    uint8_t *data;
    size_t data_len;
} model_t;

static void model_add(model_t *m, tu_rng *r, const char *name, const char *dtype, size_t elem,
                      int n_dims, const uint64_t *shape) {
    spec_t *s = &m->t[m->n++];
    s->name = name;
    s->dtype = dtype;
    s->elem = elem;
    s->n_dims = n_dims;
    uint64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        s->shape[d] = shape[d];
        n *= shape[d];
    }
    s->nbytes = n * elem;
    s->bytes = tu_xmalloc(s->nbytes);
    if (elem == 4 && strcmp(dtype, "F32") == 0) {
        for (uint64_t i = 0; i < n; i++) {
            float v = tu_rng_float(r, -1.0f, 1.0f);
            memcpy(s->bytes + 4 * i, &v, 4);
        }
    } else {
        for (size_t i = 0; i < s->nbytes; i++)
            s->bytes[i] = (uint8_t)tu_rng_u64(r);
    }
}

/* Lays tensors out in reverse order of addition (so file order differs from
 * name order) and builds the JSON header with jansson. */
static void model_build(model_t *m, const char *meta_key, const char *meta_val) {
    m->data_len = 0;
    for (int i = 0; i < m->n; i++)
        m->data_len += m->t[i].nbytes;
    m->data = tu_xmalloc(m->data_len);
    json_t *root = json_object();
    if (meta_key)
        json_object_set_new(root, "__metadata__", json_pack("{ss}", meta_key, meta_val));
    size_t off = 0;
    for (int i = m->n - 1; i >= 0; i--) {
        spec_t *s = &m->t[i];
        s->offset = off;
        if (s->nbytes)
            memcpy(m->data + off, s->bytes, s->nbytes);
        json_t *shape = json_array();
        for (int d = 0; d < s->n_dims; d++)
            json_array_append_new(shape, json_integer((json_int_t)s->shape[d]));
        json_object_set_new(root, s->name,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", s->dtype, "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + s->nbytes)));
        off += s->nbytes;
    }
    m->header = json_dumps(root, JSON_COMPACT);
    CHECK(m->header, "json_dumps");
    json_decref(root);
}

static void model_free(model_t *m) {
    for (int i = 0; i < m->n; i++)
        free(m->t[i].bytes);
    free(m->header);
    free(m->data);
}

static void make_model(model_t *m, tu_rng *r) {
    memset(m, 0, sizeof *m);
    model_add(m, r, "a.weight", "F32", 4, 2, (uint64_t[]){3, 5});
    model_add(m, r, "b.f16", "F16", 2, 1, (uint64_t[]){7});
    model_add(m, r, "c.bf16", "BF16", 2, 3, (uint64_t[]){2, 3, 2});
    model_add(m, r, "d.scalar", "F32", 4, 0, NULL);
    model_add(m, r, "e.empty", "F16", 2, 2, (uint64_t[]){0, 9});
    model_add(m, r, "f.position_ids", "I64", 8, 2, (uint64_t[]){1, 3});
    model_build(m, "format", "pt");
}

static void check_model(const tsr_safetensors_t *st, const model_t *m, const uint8_t *base,
                        size_t header_len) {
    CHECK(tsr_safetensors_n_tensors(st) == (size_t)m->n, "n_tensors %zu",
          tsr_safetensors_n_tensors(st));
    for (size_t i = 1; i < tsr_safetensors_n_tensors(st); i++)
        CHECK(strcmp(tsr_safetensors_tensor_at(st, i - 1)->name,
                     tsr_safetensors_tensor_at(st, i)->name) < 0,
              "tensors not sorted by name at %zu", i);
    CHECK(tsr_safetensors_tensor_at(st, (size_t)m->n) == NULL, "tensor_at past the end");
    for (int i = 0; i < m->n; i++) {
        const spec_t *s = &m->t[i];
        const tsr_st_tensor *t = tsr_safetensors_find_tensor(st, s->name);
        CHECK(t, "tensor %s not found", s->name);
        CHECK(strcmp(t->name, s->name) == 0, "name %s", t->name);
        CHECK(strcmp(t->dtype_name, s->dtype) == 0, "%s: dtype_name %s", s->name, t->dtype_name);
        int want_dtype = strcmp(s->dtype, "F32") == 0    ? TSR_F32
                         : strcmp(s->dtype, "F16") == 0  ? TSR_F16
                         : strcmp(s->dtype, "BF16") == 0 ? TSR_BF16
                                                         : TSR_ST_DTYPE_NOT_LOADABLE;
        CHECK(t->dtype == want_dtype, "%s: dtype %d", s->name, t->dtype);
        CHECK(t->elem_size == s->elem, "%s: elem_size %zu", s->name, t->elem_size);
        CHECK(t->n_dims == (uint32_t)s->n_dims, "%s: n_dims %u", s->name, t->n_dims);
        uint64_t n = 1;
        for (int d = 0; d < TSR_ST_MAX_DIMS; d++) {
            uint64_t want = d < s->n_dims ? s->shape[d] : 1;
            CHECK(t->shape[d] == want, "%s: shape[%d] = %llu", s->name, d,
                  (unsigned long long)t->shape[d]);
            n *= t->shape[d];
        }
        CHECK(t->n_elem == n, "%s: n_elem", s->name);
        CHECK(t->nbytes == s->nbytes, "%s: nbytes %zu", s->name, t->nbytes);
        CHECK(t->offset == s->offset, "%s: offset", s->name);
        if (base)
            CHECK((const uint8_t *)t->data == base + 8 + header_len + s->offset, "%s: data pointer",
                  s->name);
        CHECK(s->nbytes == 0 || memcmp(t->data, s->bytes, s->nbytes) == 0, "%s: data bytes",
              s->name);
        if (want_dtype == TSR_F32) {
            for (uint64_t e = 0; e < n; e++) {
                float got, want;
                memcpy(&got, (const uint8_t *)t->data + 4 * e, 4);
                memcpy(&want, s->bytes + 4 * e, 4);
                CHECK(got == want, "%s[%llu]: %g != %g", s->name, (unsigned long long)e,
                      (double)got, (double)want);
            }
        }
        if (want_dtype == TSR_ST_DTYPE_NOT_LOADABLE)
            CHECK_ERR(tsr_st_tensor_loadable(t), TSR_ERR_UNSUPPORTED, s->name, s->dtype);
        else
            CHECK(tsr_st_tensor_loadable(t) == TSR_OK, "%s loadable", s->name);
    }
    CHECK(tsr_safetensors_find_tensor(st, "nope") == NULL, "found a missing tensor");
    CHECK(tsr_safetensors_find_tensor(st, "__metadata__") == NULL, "metadata as a tensor");
    CHECK(tsr_safetensors_n_meta(st) == 1, "n_meta");
    const char *k, *v;
    tsr_safetensors_meta_at(st, 0, &k, &v);
    CHECK(k && v && strcmp(k, "format") == 0 && strcmp(v, "pt") == 0, "meta_at");
    CHECK(tsr_safetensors_find_meta(st, "format") &&
              strcmp(tsr_safetensors_find_meta(st, "format"), "pt") == 0,
          "find_meta");
    CHECK(tsr_safetensors_find_meta(st, "nope") == NULL, "find_meta missing");
}

static void test_roundtrip(const char *tmp, tu_rng *r) {
    model_t m;
    make_model(&m, r);

    /* Memory, header padded to 8 bytes as writers do, and unpadded (data
     * section unaligned). */
    for (int aligned = 0; aligned < 2; aligned++) {
        size_t hl = strlen(m.header);
        size_t pad = (8 - hl % 8) % 8 + (aligned ? 0 : 3); /* data at 8k or 8k+3 */
        buf_t img = make_image(m.header, pad, m.data, m.data_len);
        tsr_safetensors_t *st = NULL;
        CHECK(tsr_safetensors_open_memory(img.p, img.len, "mem", &st) == TSR_OK, "open");
        CHECK(strcmp(tsr_safetensors_name(st), "mem") == 0, "name");
        check_model(st, &m, img.p, hl + pad);
        tsr_safetensors_close(st);
        free(img.p);
    }

    /* Through a file (mmap). */
    buf_t img = make_image(m.header, 0, m.data, m.data_len);
    write_file(tmp, "rt.safetensors", img.p, img.len);
    char *path = join(tmp, "rt.safetensors");
    tsr_safetensors_t *st = NULL;
    CHECK(tsr_safetensors_open(path, &st) == TSR_OK, "open %s", path);
    CHECK(strcmp(tsr_safetensors_name(st), path) == 0, "name");
    check_model(st, &m, NULL, 0);
    tsr_safetensors_close(st);
    free(path);
    free(img.p);

    /* A file with no tensors and no metadata. */
    buf_t empty = make_image("{}", 6, NULL, 0);
    CHECK(tsr_safetensors_open_memory(empty.p, empty.len, "e", &st) == TSR_OK, "open {}");
    CHECK(tsr_safetensors_n_tensors(st) == 0 && tsr_safetensors_n_meta(st) == 0, "empty");
    CHECK(tsr_safetensors_find_tensor(st, "x") == NULL, "find in empty");
    tsr_safetensors_close(st);
    free(empty.p);

    tsr_safetensors_close(NULL);
    model_free(&m);
}

/* ---- corrupt files ------------------------------------------------------ */

static void test_corrupt(const char *tmp) {
    tsr_safetensors_t *st = NULL;

    /* Files. */
    write_file(tmp, "empty.safetensors", "", 0);
    char *p = join(tmp, "empty.safetensors");
    CHECK_ERR(tsr_safetensors_open(p, &st), TSR_ERR_FORMAT, p, "too short");
    CHECK(st == NULL, "handle on error");
    free(p);
    p = join(tmp, "missing.safetensors");
    CHECK_ERR(tsr_safetensors_open(p, &st), TSR_ERR_IO, p, "cannot open");
    free(p);
    CHECK_ERR(tsr_safetensors_open(tmp, &st), TSR_ERR_IO, tmp, "not a regular file");

    /* A 7-byte image. */
    buf_t b = {malloc(7), 7};
    memset(b.p, 0, 7);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "too short");

    /* Header length larger than the file. */
    b = make_image("{}", 0, NULL, 0);
    b.p[0] = 200;
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "header length 200", "larger than");

    /* Header length 0. */
    b = make_image("", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "no JSON header");

    /* Header length over the 100 MB limit, in an image really that large
     * (an anonymous mapping: pages untouched cost nothing). */
    {
        size_t big = (size_t)TSR_ST_MAX_HEADER_BYTES + 64;
        uint8_t *mp = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(mp != MAP_FAILED, "mmap");
        uint64_t hl = TSR_ST_MAX_HEADER_BYTES + 1;
        for (int i = 0; i < 8; i++)
            mp[i] = (uint8_t)(hl >> (8 * i));
        mp[8] = '{';
        CHECK_ERR(tsr_safetensors_open_memory(mp, big, "big", &st), TSR_ERR_FORMAT, "big",
                  "100000001", "limit");
        munmap(mp, big);
    }

    /* Not JSON, not an object, duplicate keys. */
    b = make_image("{\"a\": {\"dtype\": ", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "not valid JSON");
    b = make_image("\x01\x02garbage", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "not valid JSON");
    b = make_image("[1, 2, 3]", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "is an array, not an object");
    b = make_image("\"str\"", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "is a string, not an object");
    b = make_image_zero("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                        1);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "duplicate");

    /* Entry problems. */
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "missing \"data_offsets\"");
    b = make_image_zero("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "missing \"dtype\"");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "missing \"shape\"");
    b = make_image_zero("{\"w\":[1,2]}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "not an object");
    b = make_image_zero("{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "dtype", "not a string");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "[begin, end]");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "data_offsets[1]");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-4,4]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "data_offsets[0]");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "\"shape\" is an integer");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "shape[0]", "not an integer");

    /* Offsets. */
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "out of range", "8 bytes");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "end before");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "size mismatch", "[2, 2]", "needs 16");
    b = make_image_zero("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                        24);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'a'", "'b'", "overlap");
    b = make_image_zero("{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[4,12]},"
                        "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[6,10]}}",
                        12);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "overlap"); /* b inside a */
    b = make_image_zero("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                        8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "overlap"); /* the same bytes twice */
    /* Empty tensors at the same offset as real ones do not overlap. */
    b = make_image_zero("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                        "\"y\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
                        8);
    CHECK(tsr_safetensors_open_memory(b.p, b.len, "ok", &st) == TSR_OK, "empty tensors");
    tsr_safetensors_close(st);
    free(b.p);

    /* Dtypes and shapes. */
    b = make_image_zero("{\"layer.0.q\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,1]}}",
                        1);
    CHECK_IMAGE_ERR(b, TSR_ERR_UNSUPPORTED, "'layer.0.q'", "dtype \"Q4\"");
    b = make_image_zero("{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1);
    CHECK_IMAGE_ERR(b, TSR_ERR_UNSUPPORTED, "'w'", "\"F4\"");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,8]}}", 8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "negative shape[1] = -3");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],"
                        "\"data_offsets\":[0,8]}}",
                        8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "overflow");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807],"
                        "\"data_offsets\":[0,8]}}",
                        8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "overflow the byte size");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                        "\"data_offsets\":[0,8]}}",
                        8);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "'w'", "overflow");
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2,2,2,2,2,2,2,1],"
                        "\"data_offsets\":[0,1024]}}",
                        1024);
    CHECK_IMAGE_ERR(b, TSR_ERR_UNSUPPORTED, "'w'", "9 dimensions");
    /* A zero dimension beside huge ones is an empty tensor, not an overflow. */
    b = make_image_zero("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,0,4294967296],"
                        "\"data_offsets\":[0,0]}}",
                        0);
    CHECK(tsr_safetensors_open_memory(b.p, b.len, "ok", &st) == TSR_OK, "zero dim");
    CHECK(tsr_safetensors_find_tensor(st, "w")->nbytes == 0, "zero dim nbytes");
    tsr_safetensors_close(st);
    free(b.p);

    /* Metadata. */
    b = make_image("{\"__metadata__\":{\"n\":3}}", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "metadata value of \"n\"", "not a string");
    b = make_image("{\"__metadata__\":[\"x\"]}", 0, NULL, 0);
    CHECK_IMAGE_ERR(b, TSR_ERR_FORMAT, "__metadata__", "not an object");

    /* Truncated data: a valid image missing its last 3 bytes, via a file. */
    {
        tu_rng r = {12345};
        model_t m;
        make_model(&m, &r);
        buf_t img = make_image(m.header, 0, m.data, m.data_len);
        write_file(tmp, "trunc.safetensors", img.p, img.len - 3);
        p = join(tmp, "trunc.safetensors");
        CHECK_ERR(tsr_safetensors_open(p, &st), TSR_ERR_FORMAT, p, "out of range", "truncated");
        free(p);
        /* Truncated inside the header. */
        write_file(tmp, "trunc2.safetensors", img.p, 8 + strlen(m.header) / 2);
        p = join(tmp, "trunc2.safetensors");
        CHECK_ERR(tsr_safetensors_open(p, &st), TSR_ERR_FORMAT, p, "larger than");
        free(p);
        free(img.p);
        model_free(&m);
    }
}

/* ---- checkpoint directories --------------------------------------------- */

/* A one-tensor F32 file image with values start, start+1, ... */
static buf_t one_file(const char *names[], int n, float start) {
    json_t *root = json_object();
    float vals[16];
    CHECK(n * 2 <= 16, "too many");
    for (int i = 0; i < n; i++) {
        vals[2 * i] = start + (float)(2 * i);
        vals[2 * i + 1] = start + (float)(2 * i + 1);
        json_object_set_new(root, names[i],
                            json_pack("{s:s, s:[i], s:[i, i]}", "dtype", "F32", "shape", 2,
                                      "data_offsets", 8 * i, 8 * i + 8));
    }
    char *h = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    buf_t b = make_image(h, 0, vals, (size_t)n * 8);
    free(h);
    return b;
}

static void write_shard(const char *dir, const char *file, const char *names[], int n,
                        float start) {
    buf_t b = one_file(names, n, start);
    write_file(dir, file, b.p, b.len);
    free(b.p);
}

static float first_value(const tsr_st_tensor *t) {
    float v;
    memcpy(&v, t->data, 4);
    return v;
}

static const char *k_index_ok =
    "{\"metadata\": {\"total_size\": 24},\n"
    " \"weight_map\": {\n"
    "  \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
    "  \"model.norm.weight\": \"model-00001-of-00002.safetensors\",\n"
    "  \"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}\n";

static void test_dir(const char *tmp) {
    tsr_st_dir_t *d = NULL;
    const char *s1[] = {"model.embed_tokens.weight", "model.norm.weight"};
    const char *s2[] = {"lm_head.weight", "extra.not_in_map"};

    /* Single file. */
    char *single = make_subdir(tmp, "single");
    write_shard(single, "model.safetensors", s1, 2, 10.0f);
    CHECK(tsr_st_dir_open(single, &d) == TSR_OK, "open single");
    CHECK(!tsr_st_dir_is_sharded(d) && tsr_st_dir_n_files(d) == 1, "single layout");
    CHECK(tsr_st_dir_n_tensors(d) == 2, "single n_tensors");
    CHECK(tsr_st_dir_find(d, "model.norm.weight") &&
              first_value(tsr_st_dir_find(d, "model.norm.weight")) == 12.0f,
          "single find");
    CHECK(tsr_st_dir_find(d, "lm_head.weight") == NULL, "single find missing");
    tsr_st_dir_close(d);

    /* Sharded. */
    char *sh = make_subdir(tmp, "sharded");
    write_shard(sh, "model-00001-of-00002.safetensors", s1, 2, 100.0f);
    write_shard(sh, "model-00002-of-00002.safetensors", s2, 2, 200.0f);
    write_text(sh, "model.safetensors.index.json", k_index_ok);
    CHECK(tsr_st_dir_open(sh, &d) == TSR_OK, "open sharded");
    CHECK(tsr_st_dir_is_sharded(d) && tsr_st_dir_n_files(d) == 2, "sharded layout");
    CHECK(strstr(tsr_safetensors_name(tsr_st_dir_file_at(d, 0)), "model-00001-of-00002"),
          "file order");
    CHECK(tsr_st_dir_n_tensors(d) == 3, "only mapped tensors: %zu", tsr_st_dir_n_tensors(d));
    CHECK(strcmp(tsr_st_dir_tensor_at(d, 0)->name, "lm_head.weight") == 0 &&
              strcmp(tsr_st_dir_tensor_at(d, 2)->name, "model.norm.weight") == 0 &&
              tsr_st_dir_tensor_at(d, 3) == NULL,
          "tensor order");
    CHECK(first_value(tsr_st_dir_find(d, "model.embed_tokens.weight")) == 100.0f, "shard 1");
    CHECK(first_value(tsr_st_dir_find(d, "model.norm.weight")) == 102.0f, "shard 1 b");
    CHECK(first_value(tsr_st_dir_find(d, "lm_head.weight")) == 200.0f, "shard 2");
    CHECK(tsr_st_dir_find(d, "extra.not_in_map") == NULL, "unmapped tensor visible");
    CHECK(tsr_st_dir_find(d, "nope") == NULL, "missing");
    tsr_st_dir_close(d);
    tsr_st_dir_close(NULL);

    /* Index pointing at a missing file. */
    char *miss = make_subdir(tmp, "missing_shard");
    write_shard(miss, "model-00001-of-00002.safetensors", s1, 2, 0.0f);
    write_text(miss, "model.safetensors.index.json", k_index_ok);
    CHECK_ERR(tsr_st_dir_open(miss, &d), TSR_ERR_IO, "model-00002-of-00002.safetensors",
              "model.safetensors.index.json", "cannot open");
    CHECK(d == NULL, "handle on error");

    /* A mapped name missing from its shard. */
    char *nom = make_subdir(tmp, "missing_name");
    const char *s1b[] = {"model.embed_tokens.weight"};
    write_shard(nom, "model-00001-of-00002.safetensors", s1b, 1, 0.0f);
    write_shard(nom, "model-00002-of-00002.safetensors", s2, 2, 0.0f);
    write_text(nom, "model.safetensors.index.json", k_index_ok);
    CHECK_ERR(tsr_st_dir_open(nom, &d), TSR_ERR_FORMAT, "'model.norm.weight'",
              "model-00001-of-00002.safetensors", "no such tensor");

    /* Path traversal and other bad names. */
    char *trav = make_subdir(tmp, "traversal");
    write_shard(trav, "model.safetensors", s1, 2, 0.0f);
    write_text(trav, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"../single/model.safetensors\"}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "../single/model.safetensors",
              "model.safetensors.index.json", "inside the directory");
    write_text(trav, "model.safetensors.index.json",
               "{\"weight_map\": {\"a\": \"model.safetensors\", \"b\": \"..\"}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "\"..\"");
    write_text(trav, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"/etc/passwd\"}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "/etc/passwd");
    write_text(trav, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"\"}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "'a'");
    write_text(trav, "model.safetensors.index.json", "{\"weight_map\": {\"a\": 3}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "'a'", "not a file name");
    write_text(trav, "model.safetensors.index.json", "{\"metadata\": {}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "missing \"weight_map\"");
    write_text(trav, "model.safetensors.index.json", "{\"weight_map\": {}}");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "non-empty");
    write_text(trav, "model.safetensors.index.json", "{\"weight_map\": ");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "model.safetensors.index.json",
              "not valid JSON");
    write_text(trav, "model.safetensors.index.json", "[]");
    CHECK_ERR(tsr_st_dir_open(trav, &d), TSR_ERR_FORMAT, "not an object");

    /* A corrupt shard: the message names the shard and the index. */
    char *bad = make_subdir(tmp, "bad_shard");
    write_shard(bad, "model-00001-of-00002.safetensors", s1, 2, 0.0f);
    write_text(bad, "model-00002-of-00002.safetensors", "garbage!garbage!");
    write_text(bad, "model.safetensors.index.json", k_index_ok);
    CHECK_ERR(tsr_st_dir_open(bad, &d), TSR_ERR_FORMAT, "model-00002-of-00002.safetensors",
              "model.safetensors.index.json");

    /* Nothing there. */
    char *none = make_subdir(tmp, "none");
    CHECK_ERR(tsr_st_dir_open(none, &d), TSR_ERR_IO, none, "neither");
    char *nodir = join(tmp, "does_not_exist");
    CHECK_ERR(tsr_st_dir_open(nodir, &d), TSR_ERR_IO, nodir);
    char *notdir = join(single, "model.safetensors");
    CHECK_ERR(tsr_st_dir_open(notdir, &d), TSR_ERR_IO, "not a directory");

    free(single);
    free(sh);
    free(miss);
    free(nom);
    free(trav);
    free(bad);
    free(none);
    free(nodir);
    free(notdir);
}

/* ---- mutation "fuzz" loop ------------------------------------------------ */

static void fuzz_one(const uint8_t *img, size_t len, size_t *accepted) {
    /* An exactly-sized heap copy, so ASan sees any read past the end. */
    uint8_t *copy = tu_xmalloc(len);
    if (len)
        memcpy(copy, img, len);
    tsr_safetensors_t *st = NULL;
    tsr_status s = tsr_safetensors_open_memory(copy, len, "fuzz", &st);
    if (s == TSR_OK) {
        (*accepted)++;
        unsigned sum = 0;
        for (size_t i = 0; i < tsr_safetensors_n_tensors(st); i++) {
            const tsr_st_tensor *t = tsr_safetensors_tensor_at(st, i);
            const uint8_t *p = t->data;
            CHECK(p >= copy && t->nbytes <= len && p - copy <= (ptrdiff_t)(len - t->nbytes),
                  "tensor %s outside the image", t->name);
            for (size_t k = 0; k < t->nbytes; k++)
                sum += p[k];
            CHECK(tsr_safetensors_find_tensor(st, t->name) == t, "find %s", t->name);
        }
        for (size_t i = 0; i < tsr_safetensors_n_meta(st); i++) {
            const char *k, *v;
            tsr_safetensors_meta_at(st, i, &k, &v);
            sum += (unsigned)strlen(k) + (unsigned)strlen(v);
        }
        (void)sum;
        tsr_safetensors_close(st);
    } else {
        CHECK(st == NULL, "handle on error");
        CHECK(tsr_error_msg()[0] != '\0', "error without a message");
        CHECK(s == TSR_ERR_FORMAT || s == TSR_ERR_UNSUPPORTED, "status %s", tsr_status_str(s));
    }
    free(copy);
}

static void test_fuzz(tu_rng *r, int iters) {
    model_t m;
    make_model(&m, r);
    buf_t img = make_image(m.header, 0, m.data, m.data_len);
    size_t hdr_end = 8 + strlen(m.header);
    uint8_t *work = tu_xmalloc(img.len);
    static const char tokens[] = "{}[]\":,0123456789-eE. \\u";
    size_t accepted = 0;

    fuzz_one(img.p, img.len, &accepted);
    CHECK(accepted == 1, "the unmutated image is refused");
    for (int it = 0; it < iters; it++) {
        memcpy(work, img.p, img.len);
        size_t len = img.len;
        int kind = (int)(tu_rng_u64(r) % 5);
        int n = 1 + (int)(tu_rng_u64(r) % 4);
        switch (kind) {
        case 0: /* flip random bits anywhere */
            for (int k = 0; k < n; k++)
                work[tu_rng_u64(r) % len] ^= (uint8_t)(1u << (tu_rng_u64(r) % 8));
            break;
        case 1: /* JSON-ish bytes inside the header */
            for (int k = 0; k < n; k++)
                work[8 + tu_rng_u64(r) % (hdr_end - 8)] =
                    (uint8_t)tokens[tu_rng_u64(r) % (sizeof tokens - 1)];
            break;
        case 2: /* truncate */ len = (size_t)(tu_rng_u64(r) % len); break;
        case 3: /* damage the header length */
            work[tu_rng_u64(r) % 8] = (uint8_t)tu_rng_u64(r);
            break;
        default: /* change a digit of an offset or shape */
            for (int k = 0; k < n; k++) {
                size_t at = 8 + tu_rng_u64(r) % (hdr_end - 8);
                if (work[at] >= '0' && work[at] <= '9')
                    work[at] = (uint8_t)('0' + tu_rng_u64(r) % 10);
            }
            if (tu_rng_u64(r) % 4 == 0)
                len -= tu_rng_u64(r) % 8;
            break;
        }
        fuzz_one(work, len, &accepted);
    }
    printf("  fuzz: %d mutants, %zu accepted, %zu refused\n", iters, accepted - 1,
           (size_t)iters - (accepted - 1));
    free(work);
    free(img.p);
    model_free(&m);
}

/* shard/safetensors_write: a file written by tsr_safetensors_write reads
 * back through the reader with the same names, dtypes, shapes and bytes,
 * and its data section starts at a multiple of 8 after __metadata__. */
static void test_writer(const char *tmp) {
    const float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    const uint16_t b[3] = {0x3f80, 0xc000, 0x7fc0};
    const uint16_t c[1] = {0x3c00};
    tsr_st_out_tensor t[3] = {
        {.name = "b.weight", .dtype = TSR_BF16, .n_dims = 1, .shape = {3}, .data = b},
        {.name = "a.weight", .dtype = TSR_F32, .n_dims = 2, .shape = {2, 3}, .data = a},
        {.name = "c", .dtype = TSR_F16, .n_dims = 3, .shape = {1, 1, 1}, .data = c},
    };
    char path[4200];
    snprintf(path, sizeof path, "%s/written.safetensors", tmp);
    CHECK(tsr_safetensors_write(path, t, 3) == TSR_OK, "write: %s", tsr_error_msg());
    CHECK(tsr_safetensors_write(path, t, 3) == TSR_ERR_IO, "an existing file is refused");
    tsr_safetensors_t *st = NULL;
    CHECK(tsr_safetensors_open(path, &st) == TSR_OK, "open: %s", tsr_error_msg());
    CHECK(tsr_safetensors_n_tensors(st) == 3, "3 tensors");
    CHECK(tsr_safetensors_find_meta(st, "format") &&
              !strcmp(tsr_safetensors_find_meta(st, "format"), "pt"),
          "format pt");
    for (int i = 0; i < 3; i++) {
        const tsr_st_tensor *x = tsr_safetensors_find_tensor(st, t[i].name);
        CHECK(x && x->dtype == t[i].dtype && x->n_dims == t[i].n_dims, "%s", t[i].name);
        for (uint32_t d = 0; d < x->n_dims; d++)
            CHECK(x->shape[d] == t[i].shape[d], "%s dim %u", t[i].name, d);
        CHECK(x->nbytes == tsr_st_out_nbytes(&t[i]) && !memcmp(x->data, t[i].data, x->nbytes),
              "%s bytes", t[i].name);
    }
    /* laid out in the order given: b first */
    CHECK(tsr_safetensors_find_tensor(st, "b.weight")->offset == 0, "order given");
    tsr_safetensors_close(st);
    char *head;
    size_t hl;
    CHECK(tsr_safetensors_header(t, 3, &head, &hl) == TSR_OK && hl % 8 == 0 &&
              !strncmp(head + 8, "{\"__metadata__\":{\"format\":\"pt\"},", 32),
          "header");
    free(head);
    tsr_st_out_tensor bad = {.name = "x", .dtype = 99, .n_dims = 1, .shape = {1}, .data = a};
    CHECK(tsr_safetensors_header(&bad, 1, &head, &hl) == TSR_ERR_INVALID && !head, "bad dtype");
}

int main(int argc, char **argv) {
    /* Usage: test_safetensors [fuzz_iterations [fuzz_seed]] */
    int iters = argc > 1 ? atoi(argv[1]) : 5000;
    uint64_t fuzz_seed = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x2545F4914F6CDD1Dull;
    const char *tmp = tu_tmpdir_make("tsr_st_test");

    tu_rng r = {0x9E3779B97F4A7C15ull};
    test_roundtrip(tmp, &r);
    printf("  roundtrip ok\n");
    test_corrupt(tmp);
    printf("  corrupt files ok\n");
    test_dir(tmp);
    printf("  checkpoint directories ok\n");
    test_writer(tmp);
    printf("  writer ok\n");
    tu_rng fr = {fuzz_seed};
    test_fuzz(&fr, iters);

    CHECK(tu_tmpdir_remove() == 0, "cannot remove %s", tmp);
    printf("test_safetensors: all passed\n");
    return 0;
}
