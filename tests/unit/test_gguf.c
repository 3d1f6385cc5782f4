/* tests/unit/test_gguf.c - unit tests for shard/gguf, the GGUF v2/v3 reader.
 *
 * A small GGUF writer here builds images in memory: every metadata type
 * (scalars, strings, arrays of numbers, strings and bools), tensors of
 * several types with alignment padding, a custom general.alignment. The
 * tests check every getter and tensor descriptor on v2 and v3 images, then
 * feed the reader every corruption it must refuse (bad magic and version,
 * every truncation of a valid file, lying counts and lengths, bad tensor
 * descriptors, bad layouts) and a seeded mutation loop, each on an
 * exactly-sized heap copy so ASan sees any read past the end. Finally a real
 * file through tsr_gguf_open, and paths that do not open.
 *
 * What it is not: a test of model loading (shard/model_file). Exits 0 on
 * success, 1 with a message at the first failure. */
#include "shard/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/dtype.h"
#include "tests/common/check.h"

#define IMG_NAME "img.gguf"

/* ---- a minimal GGUF writer ------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *d, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CHECK(b->p, "out of memory");
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_u8(buf_t *b, uint8_t v) { put(b, &v, 1); }
static void put_le(buf_t *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++)
        put_u8(b, (uint8_t)(v >> (8 * i)));
}
static void put_u16(buf_t *b, uint16_t v) { put_le(b, v, 2); }
static void put_u32(buf_t *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(buf_t *b, uint64_t v) { put_le(b, v, 8); }
static void put_f32(buf_t *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(buf_t *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(b, u);
}
static void put_str(buf_t *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

typedef struct {
    uint32_t magic, version;
    uint64_t alignment; /* used to lay out the image; its kv is separate */
    buf_t kv, ti, data;
    uint64_t n_kv, n_tensors;
} gg_t;

static void gg_init(gg_t *g, uint32_t version, uint64_t alignment) {
    memset(g, 0, sizeof *g);
    g->magic = 0x46554747u;
    g->version = version;
    g->alignment = alignment;
}

static void gg_free(gg_t *g) {
    free(g->kv.p);
    free(g->ti.p);
    free(g->data.p);
}

/* Starts a kv: key and type; the caller appends the value to g->kv. */
static buf_t *gg_key(gg_t *g, const char *key, uint32_t type) {
    put_str(&g->kv, key);
    put_u32(&g->kv, type);
    g->n_kv++;
    return &g->kv;
}

/* Starts an array kv of n elements; the caller appends them. */
static buf_t *gg_arr(gg_t *g, const char *key, uint32_t elem, uint64_t n) {
    buf_t *b = gg_key(g, key, TSR_GGUF_ARRAY);
    put_u32(b, elem);
    put_u64(b, n);
    return b;
}

/* A tensor descriptor only (the data is the caller's business). */
static void gg_tensor_info(gg_t *g, const char *name, uint32_t nd, const uint64_t *ne,
                           uint32_t type, uint64_t offset) {
    put_str(&g->ti, name);
    put_u32(&g->ti, nd);
    for (uint32_t d = 0; d < nd && d < 5; d++) /* a lying nd gets at most 5 */
        put_u64(&g->ti, ne[d]);
    put_u32(&g->ti, type);
    put_u64(&g->ti, offset);
    g->n_tensors++;
}

/* A tensor with its data appended at the next aligned offset (the padding is
 * 0xee bytes, so nothing depends on it being zero); returns the offset. */
static uint64_t gg_tensor(gg_t *g, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type,
                          const void *data, size_t nbytes) {
    while (g->data.len % g->alignment)
        put_u8(&g->data, 0xee);
    uint64_t off = g->data.len;
    gg_tensor_info(g, name, nd, ne, type, off);
    put(&g->data, data, nbytes);
    return off;
}

/* The image: header, kvs, tensor infos, padding to the alignment, data. */
static buf_t gg_build(const gg_t *g) {
    buf_t b = {0};
    put_u32(&b, g->magic);
    put_u32(&b, g->version);
    put_u64(&b, g->n_tensors);
    put_u64(&b, g->n_kv);
    put(&b, g->kv.p, g->kv.len);
    put(&b, g->ti.p, g->ti.len);
    while (b.len % g->alignment)
        put_u8(&b, 0xee);
    put(&b, g->data.p, g->data.len);
    return b;
}

/* Opens an exactly-sized heap copy (ASan catches reads past the end). The
 * copy is returned through *copy when the open succeeds. */
static tsr_status open_copy(const void *img, size_t len, tsr_gguf_t **g, uint8_t **copy) {
    uint8_t *c = tu_xmalloc(len);
    if (len)
        memcpy(c, img, len);
    tsr_status st = tsr_gguf_open_memory(c, len, IMG_NAME, g);
    if (st == TSR_OK && copy) {
        *copy = c;
    } else {
        if (st == TSR_OK)
            tsr_gguf_close(*g), *g = NULL;
        free(c);
    }
    return st;
}

/* The image must be refused with `want` (or TSR_ERR_FORMAT / UNSUPPORTED when
 * want is TSR_OK, meaning "either"), a message naming the image and
 * containing `sub`, and no handle. */
static void expect_refused(const buf_t *img, tsr_status want, const char *sub, const char *what) {
    tsr_gguf_t *g = (tsr_gguf_t *)1;
    tsr_error_clear();
    tsr_status st = open_copy(img->p, img->len, &g, NULL);
    CHECK(st != TSR_OK, "%s: accepted", what);
    if (want == TSR_OK)
        CHECK(st == TSR_ERR_FORMAT || st == TSR_ERR_UNSUPPORTED, "%s: status %s", what,
              tsr_status_str(st));
    else
        CHECK(st == want, "%s: status %s, want %s", what, tsr_status_str(st), tsr_status_str(want));
    CHECK(g == NULL, "%s: handle left non-NULL on error", what);
    CHECK(strstr(tsr_error_msg(), IMG_NAME), "%s: message does not name the image", what);
    CHECK(!sub || strstr(tsr_error_msg(), sub), "%s: message lacks \"%s\"", what, sub);
}

/* The last refusal's message also contains `sub` (for messages that must name
 * several things: a tensor's name, type and shape). */
static void expect_msg_has(const char *sub, const char *what) {
    CHECK(strstr(tsr_error_msg(), sub), "%s: message lacks \"%s\": %s", what, sub, tsr_error_msg());
}

/* ---- the full valid image ---------------------------------------------------- */

typedef struct {
    const char *name;
    uint32_t nd;
    uint64_t ne[4];
    int type;
    uint8_t *bytes;
    size_t nbytes;
    uint64_t offset;
} tensor_exp;

enum { N_TENSORS = 5 };

typedef struct {
    tensor_exp t[N_TENSORS];
    uint64_t alignment;
    uint32_t version;
    size_t n_kv;
} image_exp;

static void rand_bytes(tu_rng *r, uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)tu_rng_u64(r);
}

static void make_tensors(tu_rng *r, tensor_exp *t) {
    static const struct {
        const char *name;
        uint32_t nd;
        uint64_t ne[4];
        int type;
    } spec[N_TENSORS] = {
        {"token_embd.weight", 2, {5, 3, 1, 1}, TSR_F32},
        {"output_norm.weight", 1, {7, 1, 1, 1}, TSR_F16},
        {"blk.0.attn_q.weight", 2, {64, 2, 1, 1}, TSR_Q8_0},
        {"blk.0.ffn_up.weight", 4, {32, 1, 1, 3}, TSR_Q4_1},
        {"blk.0.ffn_down.weight", 3, {256, 2, 1, 1}, TSR_Q6_K},
    };
    for (int i = 0; i < N_TENSORS; i++) {
        t[i].name = spec[i].name;
        t[i].nd = spec[i].nd;
        memcpy(t[i].ne, spec[i].ne, sizeof t[i].ne);
        t[i].type = spec[i].type;
        uint64_t rows = t[i].ne[1] * t[i].ne[2] * t[i].ne[3];
        t[i].nbytes = tsr_dtype_row_bytes(t[i].type, t[i].ne[0]) * rows;
        t[i].bytes = tu_xmalloc(t[i].nbytes);
        if (t[i].type == TSR_F32) {
            for (size_t k = 0; k < t[i].nbytes / 4; k++) {
                float f = tu_rng_float(r, -2, 2);
                memcpy(t[i].bytes + 4 * k, &f, 4);
            }
        } else {
            rand_bytes(r, t[i].bytes, t[i].nbytes);
        }
    }
}

static void free_tensors(tensor_exp *t) {
    for (int i = 0; i < N_TENSORS; i++)
        free(t[i].bytes);
}

static const char *const arr_strs[] = {"a", "", "ccc", "d\xc3\xa9"};

/* Every metadata type, then the tensors. general.alignment (when not 32)
 * goes in the middle of the kvs, so it is found wherever it is. */
static buf_t make_full(uint32_t version, uint64_t alignment, tensor_exp *t, image_exp *e) {
    gg_t g;
    gg_init(&g, version, alignment);
    put_str(gg_key(&g, "general.architecture", TSR_GGUF_STRING), "llama");
    put_u8(gg_key(&g, "t.u8", TSR_GGUF_U8), 200);
    put_u8(gg_key(&g, "t.i8", TSR_GGUF_I8), (uint8_t)(int8_t)-100);
    put_u16(gg_key(&g, "t.u16", TSR_GGUF_U16), 60000);
    put_u16(gg_key(&g, "t.i16", TSR_GGUF_I16), (uint16_t)(int16_t)-30000);
    put_u32(gg_key(&g, "t.u32", TSR_GGUF_U32), 4000000000u);
    put_u32(gg_key(&g, "t.i32", TSR_GGUF_I32), (uint32_t)(int32_t)-2000000000);
    put_f32(gg_key(&g, "t.f32", TSR_GGUF_F32), 1.5f);
    put_u8(gg_key(&g, "t.bool1", TSR_GGUF_BOOL), 1);
    put_u8(gg_key(&g, "t.bool0", TSR_GGUF_BOOL), 0);
    if (alignment != 32)
        put_u32(gg_key(&g, "general.alignment", TSR_GGUF_U32), (uint32_t)alignment);
    put_str(gg_key(&g, "t.str", TSR_GGUF_STRING), "hello, gguf");
    put_str(gg_key(&g, "t.empty", TSR_GGUF_STRING), "");
    put_u64(gg_key(&g, "t.u64", TSR_GGUF_U64), (UINT64_C(1) << 63) + 5);
    put_u64(gg_key(&g, "t.i64", TSR_GGUF_I64), (uint64_t)(-(INT64_C(1) << 62) - 3));
    put_f64(gg_key(&g, "t.f64", TSR_GGUF_F64), 3.141592653589793);
    buf_t *b = gg_arr(&g, "t.arr.i32", TSR_GGUF_I32, 4);
    put_u32(b, (uint32_t)-1), put_u32(b, 2), put_u32(b, (uint32_t)-3), put_u32(b, 2147483647u);
    b = gg_arr(&g, "t.arr.u8", TSR_GGUF_U8, 3);
    put_u8(b, 1), put_u8(b, 255), put_u8(b, 7);
    b = gg_arr(&g, "t.arr.u64", TSR_GGUF_U64, 2);
    put_u64(b, 1), put_u64(b, UINT64_C(1) << 40);
    b = gg_arr(&g, "t.arr.i16", TSR_GGUF_I16, 1);
    put_u16(b, (uint16_t)(int16_t)-5);
    b = gg_arr(&g, "t.arr.f32", TSR_GGUF_F32, 2);
    put_f32(b, 0.5f), put_f32(b, -2.25f);
    b = gg_arr(&g, "t.arr.f64", TSR_GGUF_F64, 2);
    put_f64(b, 1e300), put_f64(b, -1e-300);
    b = gg_arr(&g, "t.arr.str", TSR_GGUF_STRING, 4);
    for (int i = 0; i < 4; i++)
        put_str(b, arr_strs[i]);
    b = gg_arr(&g, "t.arr.bool", TSR_GGUF_BOOL, 3);
    put_u8(b, 1), put_u8(b, 0), put_u8(b, 1);
    gg_arr(&g, "t.arr.empty", TSR_GGUF_I32, 0);
    gg_arr(&g, "t.arr.empty_str", TSR_GGUF_STRING, 0);
    for (int i = 0; i < N_TENSORS; i++)
        t[i].offset = gg_tensor(&g, t[i].name, t[i].nd, t[i].ne, (uint32_t)t[i].type, t[i].bytes,
                                t[i].nbytes);
    memcpy(e->t, t, sizeof e->t);
    e->alignment = alignment;
    e->version = version;
    e->n_kv = (size_t)g.n_kv;
    buf_t img = gg_build(&g);
    gg_free(&g);
    return img;
}

static void check_scalars(const tsr_gguf_t *g) {
    uint64_t u = 77;
    int64_t i = 77;
    double f = 77;
    int bl = 77;
    tsr_strref s;

    CHECK_OK(tsr_gguf_get_u64(g, "t.u8", &u));
    CHECK(u == 200, "u8");
    CHECK_OK(tsr_gguf_get_u64(g, "t.u16", &u));
    CHECK(u == 60000, "u16");
    CHECK_OK(tsr_gguf_get_u64(g, "t.u32", &u));
    CHECK(u == 4000000000u, "u32");
    CHECK_OK(tsr_gguf_get_u64(g, "t.u64", &u));
    CHECK(u == (UINT64_C(1) << 63) + 5, "u64");
    CHECK_OK(tsr_gguf_get_i64(g, "t.i8", &i));
    CHECK(i == -100, "i8");
    CHECK_OK(tsr_gguf_get_i64(g, "t.i16", &i));
    CHECK(i == -30000, "i16");
    CHECK_OK(tsr_gguf_get_i64(g, "t.i32", &i));
    CHECK(i == -2000000000, "i32");
    CHECK_OK(tsr_gguf_get_i64(g, "t.i64", &i));
    CHECK(i == -(INT64_C(1) << 62) - 3, "i64");
    /* integer getters take any integer type whose value fits */
    CHECK_OK(tsr_gguf_get_i64(g, "t.u32", &i));
    CHECK(i == 4000000000, "u32 as i64");
    CHECK_OK(tsr_gguf_get_i64(g, "t.u8", &i));
    CHECK(i == 200, "u8 as i64");
    u = 77;
    CHECK_ERR(tsr_gguf_get_u64(g, "t.i8", &u), TSR_ERR_FORMAT, "t.i8");
    CHECK(u == 77, "*out written on error");
    CHECK_ERR(tsr_gguf_get_u64(g, "t.i64", &u), TSR_ERR_FORMAT, "t.i64");
    i = 77;
    CHECK_ERR(tsr_gguf_get_i64(g, "t.u64", &i), TSR_ERR_FORMAT, "t.u64");
    CHECK(i == 77, "*out written on error");
    CHECK_ERR(tsr_gguf_get_i64(g, "t.f32", &i), TSR_ERR_FORMAT, "t.f32");
    CHECK_ERR(tsr_gguf_get_i64(g, "t.str", &i), TSR_ERR_FORMAT, "t.str");
    CHECK_ERR(tsr_gguf_get_i64(g, "t.bool1", &i), TSR_ERR_FORMAT, "t.bool1");
    CHECK_ERR(tsr_gguf_get_u64(g, "t.arr.i32", &u), TSR_ERR_FORMAT, "t.arr.i32");
    CHECK(i == 77 && u == 77, "*out written on error");

    CHECK_OK(tsr_gguf_get_f64(g, "t.f32", &f));
    CHECK(f == 1.5, "f32");
    CHECK_OK(tsr_gguf_get_f64(g, "t.f64", &f));
    CHECK(f == 3.141592653589793, "f64");
    CHECK_OK(tsr_gguf_get_f64(g, "t.i16", &f));
    CHECK(f == -30000.0, "i16 as f64");
    CHECK_OK(tsr_gguf_get_f64(g, "t.u64", &f));
    CHECK(f == (double)((UINT64_C(1) << 63) + 5), "u64 as f64");
    f = 77;
    CHECK_ERR(tsr_gguf_get_f64(g, "t.bool1", &f), TSR_ERR_FORMAT, "t.bool1");
    CHECK_ERR(tsr_gguf_get_f64(g, "t.str", &f), TSR_ERR_FORMAT, "t.str");
    CHECK_ERR(tsr_gguf_get_f64(g, "t.arr.f32", &f), TSR_ERR_FORMAT, "t.arr.f32");
    CHECK(f == 77, "*out written on error");

    CHECK_OK(tsr_gguf_get_bool(g, "t.bool1", &bl));
    CHECK(bl == 1, "bool1");
    CHECK_OK(tsr_gguf_get_bool(g, "t.bool0", &bl));
    CHECK(bl == 0, "bool0");
    bl = 77;
    CHECK_ERR(tsr_gguf_get_bool(g, "t.u8", &bl), TSR_ERR_FORMAT, "t.u8");
    CHECK(bl == 77, "*out written on error");

    CHECK_OK(tsr_gguf_get_str(g, "t.str", &s));
    CHECK(s.len == 11 && !memcmp(s.ptr, "hello, gguf", 11), "str");
    CHECK(tsr_strref_eq(s, "hello, gguf") && !tsr_strref_eq(s, "hello") &&
              !tsr_strref_eq(s, "hello, gguf!"),
          "strref_eq");
    CHECK_OK(tsr_gguf_get_str(g, "t.empty", &s));
    CHECK(s.len == 0 && tsr_strref_eq(s, ""), "empty str");
    CHECK_OK(tsr_gguf_get_str(g, "general.architecture", &s));
    CHECK(tsr_strref_eq(s, "llama"), "architecture");
    s.ptr = NULL, s.len = 77;
    CHECK_ERR(tsr_gguf_get_str(g, "t.u8", &s), TSR_ERR_FORMAT, "t.u8");
    CHECK_ERR(tsr_gguf_get_str(g, "t.arr.str", &s), TSR_ERR_FORMAT, "t.arr.str");
    CHECK(s.ptr == NULL && s.len == 77, "*out written on error");

    /* Absent keys: TSR_ERR_INVALID naming the key, *out untouched. */
    u = 77, i = 77, f = 77, bl = 77;
    CHECK_ERR(tsr_gguf_get_u64(g, "no.such.key", &u), TSR_ERR_INVALID, "no.such.key");
    CHECK_ERR(tsr_gguf_get_i64(g, "t.u", &i), TSR_ERR_INVALID, "t.u");
    CHECK_ERR(tsr_gguf_get_f64(g, "t.f3", &f), TSR_ERR_INVALID, "t.f3");
    CHECK_ERR(tsr_gguf_get_bool(g, "t.bool", &bl), TSR_ERR_INVALID, "t.bool");
    CHECK_ERR(tsr_gguf_get_str(g, "t.strx", &s), TSR_ERR_INVALID, "t.strx");
    CHECK(u == 77 && i == 77 && f == 77 && bl == 77 && s.len == 77, "*out written when absent");
}

static void check_arrays(const tsr_gguf_t *g) {
    const tsr_strref *strs = NULL;
    uint64_t n = 0;
    int64_t *iv = NULL;
    double *fv = NULL;

    CHECK_OK(tsr_gguf_get_str_arr(g, "t.arr.str", &strs, &n));
    CHECK(n == 4, "string array length %llu", (unsigned long long)n);
    for (int k = 0; k < 4; k++)
        CHECK(tsr_strref_eq(strs[k], arr_strs[k]), "string array element %d", k);
    CHECK_OK(tsr_gguf_get_str_arr(g, "t.arr.empty_str", &strs, &n));
    CHECK(n == 0, "empty string array");
    CHECK_ERR(tsr_gguf_get_str_arr(g, "t.arr.i32", &strs, &n), TSR_ERR_FORMAT, "t.arr.i32");
    CHECK_ERR(tsr_gguf_get_str_arr(g, "t.str", &strs, &n), TSR_ERR_FORMAT, "t.str");
    CHECK_ERR(tsr_gguf_get_str_arr(g, "t.none", &strs, &n), TSR_ERR_INVALID, "t.none");

    CHECK_OK(tsr_gguf_get_i64_arr(g, "t.arr.i32", &iv, &n));
    CHECK(n == 4 && iv[0] == -1 && iv[1] == 2 && iv[2] == -3 && iv[3] == 2147483647, "i32 array");
    free(iv);
    CHECK_OK(tsr_gguf_get_i64_arr(g, "t.arr.u8", &iv, &n));
    CHECK(n == 3 && iv[0] == 1 && iv[1] == 255 && iv[2] == 7, "u8 array");
    free(iv);
    CHECK_OK(tsr_gguf_get_i64_arr(g, "t.arr.u64", &iv, &n));
    CHECK(n == 2 && iv[0] == 1 && iv[1] == INT64_C(1) << 40, "u64 array");
    free(iv);
    CHECK_OK(tsr_gguf_get_i64_arr(g, "t.arr.i16", &iv, &n));
    CHECK(n == 1 && iv[0] == -5, "i16 array");
    free(iv);
    iv = NULL;
    CHECK_OK(tsr_gguf_get_i64_arr(g, "t.arr.empty", &iv, &n));
    CHECK(n == 0, "empty array");
    free(iv);
    iv = (int64_t *)1;
    n = 77;
    CHECK_ERR(tsr_gguf_get_i64_arr(g, "t.arr.f32", &iv, &n), TSR_ERR_FORMAT, "t.arr.f32");
    CHECK_ERR(tsr_gguf_get_i64_arr(g, "t.arr.str", &iv, &n), TSR_ERR_FORMAT, "t.arr.str");
    CHECK_ERR(tsr_gguf_get_i64_arr(g, "t.arr.bool", &iv, &n), TSR_ERR_FORMAT, "t.arr.bool");
    CHECK_ERR(tsr_gguf_get_i64_arr(g, "t.i32", &iv, &n), TSR_ERR_FORMAT, "t.i32");
    CHECK_ERR(tsr_gguf_get_i64_arr(g, "t.nope", &iv, &n), TSR_ERR_INVALID, "t.nope");
    CHECK(iv == (int64_t *)1 && n == 77, "*out written on error");

    CHECK_OK(tsr_gguf_get_f64_arr(g, "t.arr.f32", &fv, &n));
    CHECK(n == 2 && fv[0] == 0.5 && fv[1] == -2.25, "f32 array");
    free(fv);
    CHECK_OK(tsr_gguf_get_f64_arr(g, "t.arr.f64", &fv, &n));
    CHECK(n == 2 && fv[0] == 1e300 && fv[1] == -1e-300, "f64 array");
    free(fv);
    CHECK_OK(tsr_gguf_get_f64_arr(g, "t.arr.i32", &fv, &n));
    CHECK(n == 4 && fv[0] == -1 && fv[3] == 2147483647.0, "i32 array as f64");
    free(fv);
    fv = (double *)1;
    CHECK_ERR(tsr_gguf_get_f64_arr(g, "t.arr.str", &fv, &n), TSR_ERR_FORMAT, "t.arr.str");
    CHECK_ERR(tsr_gguf_get_f64_arr(g, "t.arr.bool", &fv, &n), TSR_ERR_FORMAT, "t.arr.bool");
    CHECK_ERR(tsr_gguf_get_f64_arr(g, "t.f64", &fv, &n), TSR_ERR_FORMAT, "t.f64");
    CHECK(fv == (double *)1, "*out written on error");

    /* The raw view of arrays. */
    const tsr_gguf_kv *kv = tsr_gguf_find(g, "t.arr.bool");
    CHECK(kv && kv->type == TSR_GGUF_ARRAY && kv->v.arr.elem == TSR_GGUF_BOOL && kv->v.arr.n == 3 &&
              kv->v.arr.strs == NULL,
          "bool array kv");
    const uint8_t *bp = kv->v.arr.data;
    CHECK(bp[0] == 1 && bp[1] == 0 && bp[2] == 1, "bool array data");
    kv = tsr_gguf_find(g, "t.arr.str");
    CHECK(kv && kv->v.arr.elem == TSR_GGUF_STRING && kv->v.arr.strs && kv->v.arr.n == 4,
          "string array kv");
}

/* Checks a handle opened on `img` (base address `base`) against `e`. */
static void check_full(const tsr_gguf_t *g, const uint8_t *base, size_t size, const image_exp *e) {
    CHECK(tsr_gguf_version(g) == e->version, "version %u", tsr_gguf_version(g));
    CHECK(tsr_gguf_n_kv(g) == e->n_kv, "n_kv %zu, want %zu", tsr_gguf_n_kv(g), e->n_kv);
    CHECK(tsr_gguf_kv_at(g, e->n_kv) == NULL && tsr_gguf_kv_at(g, (size_t)-1) == NULL,
          "kv_at out of range");
    CHECK(tsr_strref_eq(tsr_gguf_kv_at(g, 0)->key, "general.architecture"), "kv order");
    CHECK(tsr_strref_eq(tsr_gguf_kv_at(g, 1)->key, "t.u8") &&
              tsr_gguf_kv_at(g, 1)->type == TSR_GGUF_U8,
          "kv 1");
    for (size_t i = 0; i < e->n_kv; i++) {
        const tsr_gguf_kv *kv = tsr_gguf_kv_at(g, i);
        char key[128];
        CHECK(kv->key.len < sizeof key, "key length");
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = '\0';
        CHECK(tsr_gguf_find(g, key) == kv, "find(%s)", key);
    }
    CHECK(tsr_gguf_find(g, "t.u") == NULL && tsr_gguf_find(g, "t.u88") == NULL &&
              tsr_gguf_find(g, "") == NULL,
          "find of absent keys");
    check_scalars(g);
    check_arrays(g);
    if (e->alignment != 32) {
        uint64_t a = 0;
        CHECK_OK(tsr_gguf_get_u64(g, "general.alignment", &a));
        CHECK(a == e->alignment, "alignment kv");
    }

    CHECK(tsr_gguf_n_tensors(g) == N_TENSORS, "n_tensors %zu", tsr_gguf_n_tensors(g));
    CHECK(tsr_gguf_tensor_at(g, N_TENSORS) == NULL, "tensor_at out of range");
    size_t data_start = size - (size_t)(e->t[N_TENSORS - 1].offset + e->t[N_TENSORS - 1].nbytes);
    CHECK(data_start % e->alignment == 0, "writer: data start");
    for (int i = 0; i < N_TENSORS; i++) {
        const tensor_exp *x = &e->t[i];
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, (size_t)i);
        CHECK(t && tsr_strref_eq(t->name, x->name), "tensor %d name", i);
        CHECK(tsr_gguf_find_tensor(g, x->name) == t, "find_tensor(%s)", x->name);
        CHECK(t->n_dims == x->nd && t->type == x->type, "%s: dims/type", x->name);
        for (int d = 0; d < 4; d++)
            CHECK(t->ne[d] == (d < (int)x->nd ? x->ne[d] : 1), "%s: ne[%d] = %llu", x->name, d,
                  (unsigned long long)t->ne[d]);
        CHECK(t->offset == x->offset && t->offset % e->alignment == 0, "%s: offset %llu", x->name,
              (unsigned long long)t->offset);
        CHECK(t->nbytes == x->nbytes, "%s: nbytes %llu, want %zu", x->name,
              (unsigned long long)t->nbytes, x->nbytes);
        CHECK((const uint8_t *)t->data == base + data_start + t->offset, "%s: data pointer",
              x->name);
        CHECK((size_t)((const uint8_t *)t->data - base) % e->alignment == 0, "%s: data alignment",
              x->name);
        CHECK(!memcmp(t->data, x->bytes, x->nbytes), "%s: data", x->name);
    }
    CHECK(tsr_gguf_find_tensor(g, "token_embd") == NULL &&
              tsr_gguf_find_tensor(g, "token_embd.weight.x") == NULL,
          "find_tensor of absent names");
}

static void test_valid(tu_rng *r) {
    static const struct {
        uint32_t version;
        uint64_t alignment;
    } cases[] = {{3, 32}, {2, 32}, {3, 64}, {2, 16}, {3, 1}, {3, 256}, {3, 8}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tensor_exp t[N_TENSORS];
        image_exp e;
        make_tensors(r, t);
        buf_t img = make_full(cases[c].version, cases[c].alignment, t, &e);
        tsr_gguf_t *g = NULL;
        uint8_t *copy = NULL;
        CHECK_OK(open_copy(img.p, img.len, &g, &copy));
        check_full(g, copy, img.len, &e);
        tsr_gguf_close(g);
        free(copy);
        free(img.p);
        free_tensors(t);
    }
    tsr_gguf_close(NULL);

    /* Nothing at all: no kvs, no tensors. */
    gg_t g0;
    gg_init(&g0, 3, 32);
    buf_t img = gg_build(&g0);
    tsr_gguf_t *g = NULL;
    uint8_t *copy0 = NULL;
    CHECK_OK(open_copy(img.p, img.len, &g, &copy0));
    CHECK(tsr_gguf_n_kv(g) == 0 && tsr_gguf_n_tensors(g) == 0 && tsr_gguf_version(g) == 3 &&
              tsr_gguf_kv_at(g, 0) == NULL && tsr_gguf_tensor_at(g, 0) == NULL &&
              tsr_gguf_find(g, "x") == NULL && tsr_gguf_find_tensor(g, "x") == NULL,
          "empty image");
    tsr_gguf_close(g);
    free(copy0);
    free(img.p);
    gg_free(&g0);

    /* Tensor-info sections of every length mod the alignment, so every
     * amount of padding before the data (0..31 bytes) occurs. */
    for (int len = 1; len <= 40; len++) {
        char name[64];
        memset(name, 'n', (size_t)len);
        name[len] = '\0';
        gg_t gg;
        gg_init(&gg, 3, 32);
        put_u32(gg_key(&gg, "k", TSR_GGUF_U32), 7);
        float vals[3] = {tu_rng_float(r, -1, 1), tu_rng_float(r, -1, 1), tu_rng_float(r, -1, 1)};
        uint64_t ne[1] = {3};
        gg_tensor(&gg, name, 1, ne, TSR_F32, vals, sizeof vals);
        img = gg_build(&gg);
        uint8_t *copy = NULL;
        CHECK_OK(open_copy(img.p, img.len, &g, &copy));
        const tsr_gguf_tensor *t = tsr_gguf_find_tensor(g, name);
        CHECK(t && t->nbytes == 12 && t->data == copy + img.len - 12 && !memcmp(t->data, vals, 12),
              "padding case %d", len);
        tsr_gguf_close(g);
        free(copy);
        free(img.p);
        gg_free(&gg);
    }
}

/* ---- corrupt images ----------------------------------------------------------- */

/* A small valid image: two kvs (one a string array) and two tensors, the
 * last ending exactly at the end of the file. */
static buf_t make_small(tu_rng *r) {
    gg_t g;
    gg_init(&g, 3, 32);
    put_str(gg_key(&g, "general.name", TSR_GGUF_STRING), "tiny");
    buf_t *b = gg_arr(&g, "tokens", TSR_GGUF_STRING, 2);
    put_str(b, "ab"), put_str(b, "c");
    float w[6];
    tu_rng_fill(r, w, 6, -1, 1);
    uint64_t ne1[2] = {3, 2}, ne2[1] = {32};
    gg_tensor(&g, "w", 2, ne1, TSR_F32, w, sizeof w);
    uint8_t q[34];
    rand_bytes(r, q, sizeof q);
    gg_tensor(&g, "q", 1, ne2, TSR_Q8_0, q, sizeof q);
    buf_t img = gg_build(&g);
    gg_free(&g);
    return img;
}

static void test_truncation(tu_rng *r) {
    buf_t img = make_small(r);
    tsr_gguf_t *g = NULL;
    CHECK_OK(open_copy(img.p, img.len, &g, NULL));
    for (size_t len = 0; len < img.len; len++) {
        buf_t cut = {img.p, len, len};
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", len, img.len);
        expect_refused(&cut, TSR_ERR_FORMAT, NULL, what);
    }
    free(img.p);
}

/* Builds an image with one kv given as raw bytes after the key. */
static buf_t one_kv_image(const char *key, uint32_t type, const void *raw, size_t n) {
    gg_t g;
    gg_init(&g, 3, 32);
    put(gg_key(&g, key, type), raw, n);
    buf_t img = gg_build(&g);
    gg_free(&g);
    return img;
}

static void patch_u64(buf_t *b, size_t at, uint64_t v) {
    for (int i = 0; i < 8; i++)
        b->p[at + i] = (uint8_t)(v >> (8 * i));
}

static void patch_u32(buf_t *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++)
        b->p[at + i] = (uint8_t)(v >> (8 * i));
}

/* An image with one tensor descriptor given field by field and `data_len`
 * random data bytes; alignment 32 unless `alignment` says otherwise (then a
 * general.alignment u32 kv is written). */
static buf_t tensor_image(tu_rng *r, uint32_t nd, const uint64_t *ne, uint32_t type,
                          uint64_t offset, size_t data_len) {
    gg_t g;
    gg_init(&g, 3, 32);
    gg_tensor_info(&g, "bad.tensor", nd, ne, type, offset);
    uint8_t *d = tu_xmalloc(data_len);
    rand_bytes(r, d, data_len);
    put(&g.data, d, data_len);
    free(d);
    buf_t img = gg_build(&g);
    gg_free(&g);
    return img;
}

static void test_corrupt(tu_rng *r) {
    buf_t img = make_small(r), bad;
    /* The small image's layout: header 24 bytes, then the first key. */
    const size_t n_tensors_at = 8, n_kv_at = 16, first_key_len_at = 24;

    /* Magic and version. */
    bad = (buf_t){tu_xmalloc(img.len), img.len, img.len};
    memcpy(bad.p, img.p, img.len);
    bad.p[0] = 'X';
    expect_refused(&bad, TSR_ERR_FORMAT, "magic", "bad magic");
    memcpy(bad.p, "GGML", 4);
    expect_refused(&bad, TSR_ERR_FORMAT, "magic", "GGML magic");
    memcpy(bad.p, img.p, 4);
    static const uint32_t versions[] = {0, 1, 4, 0xffffffffu};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        patch_u32(&bad, 4, versions[i]);
        char what[32];
        snprintf(what, sizeof what, "version %u", versions[i]);
        expect_refused(&bad, TSR_OK, "version", what);
    }
    patch_u32(&bad, 4, 2); /* v2 has the same layout as v3 */
    tsr_gguf_t *g = NULL;
    CHECK_OK(open_copy(bad.p, bad.len, &g, NULL));

    /* Counts that lie. */
    static const uint64_t kv_lies[] = {0, 1, 3, 4, 1000, UINT64_C(1) << 40, UINT64_MAX};
    for (size_t i = 0; i < sizeof kv_lies / sizeof kv_lies[0]; i++) {
        memcpy(bad.p, img.p, img.len);
        patch_u64(&bad, n_kv_at, kv_lies[i]);
        char what[64];
        snprintf(what, sizeof what, "kv count %llu (really 2)", (unsigned long long)kv_lies[i]);
        expect_refused(&bad, TSR_OK, NULL, what);
    }
    static const uint64_t t_lies[] = {0, 1, 3, 4, 1000, UINT64_C(1) << 40, UINT64_MAX};
    for (size_t i = 0; i < sizeof t_lies / sizeof t_lies[0]; i++) {
        memcpy(bad.p, img.p, img.len);
        patch_u64(&bad, n_tensors_at, t_lies[i]);
        char what[64];
        snprintf(what, sizeof what, "tensor count %llu (really 2)", (unsigned long long)t_lies[i]);
        /* Fewer tensors than described leaves a consistent file (the
         * unread descriptors become padding and data): no reader can tell,
         * so those must merely not crash. More must fail. */
        if (t_lies[i] < 2) {
            tsr_status st = open_copy(bad.p, bad.len, &g, NULL);
            CHECK(st == TSR_OK || st == TSR_ERR_FORMAT || st == TSR_ERR_UNSUPPORTED, "%s", what);
            continue;
        }
        expect_refused(&bad, TSR_OK, NULL, what);
    }
    /* String lengths that lie: the first key, huge and just past the end. */
    static const uint64_t str_lies[] = {UINT64_MAX, UINT64_C(1) << 63, 1000000};
    for (size_t i = 0; i < sizeof str_lies / sizeof str_lies[0]; i++) {
        memcpy(bad.p, img.p, img.len);
        patch_u64(&bad, first_key_len_at, str_lies[i]);
        expect_refused(&bad, TSR_ERR_FORMAT, "truncated", "key length lie");
    }
    memcpy(bad.p, img.p, img.len);
    patch_u64(&bad, first_key_len_at, img.len - first_key_len_at - 8 + 1);
    expect_refused(&bad, TSR_ERR_FORMAT, NULL, "key length one past the end");
    free(bad.p);

    /* Values. */
    uint8_t raw[64];
    memset(raw, 0x41, sizeof raw);
    static const uint32_t bad_types[] = {13, 14, 100, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        bad = one_kv_image("k.bad", bad_types[i], raw, 8);
        expect_refused(&bad, TSR_ERR_FORMAT, "k.bad", "unknown value type");
        free(bad.p);
        /* ... and as an array element type */
        buf_t body = {0};
        put_u32(&body, bad_types[i]);
        put_u64(&body, 2);
        put(&body, raw, 16);
        bad = one_kv_image("k.arr", TSR_GGUF_ARRAY, body.p, body.len);
        expect_refused(&bad, TSR_ERR_FORMAT, "k.arr", "unknown array element type");
        free(bad.p);
        free(body.p);
    }
    {
        /* A string value whose length lies. */
        buf_t body = {0};
        put_u64(&body, 100);
        put(&body, "abc", 3);
        bad = one_kv_image("k.s", TSR_GGUF_STRING, body.p, body.len);
        expect_refused(&bad, TSR_ERR_FORMAT, "truncated", "string value length lie");
        free(bad.p);
        free(body.p);
    }
    static const uint64_t arr_lies[] = {
        1000, 100000, UINT64_C(1) << 61, UINT64_C(1) << 62, (UINT64_C(1) << 62) + 1, UINT64_MAX};
    for (size_t i = 0; i < sizeof arr_lies / sizeof arr_lies[0]; i++) {
        /* An i32 array claiming more elements than are there ... */
        buf_t body = {0};
        put_u32(&body, TSR_GGUF_I32);
        put_u64(&body, arr_lies[i]);
        for (int k = 0; k < 4; k++)
            put_u32(&body, (uint32_t)k + 1);
        bad = one_kv_image("k.arr", TSR_GGUF_ARRAY, body.p, body.len);
        expect_refused(&bad, TSR_ERR_FORMAT, NULL, "array length lie");
        free(bad.p);
        free(body.p);
        /* ... and a string array doing the same. */
        body = (buf_t){0};
        put_u32(&body, TSR_GGUF_STRING);
        put_u64(&body, arr_lies[i]);
        put_str(&body, "x"), put_str(&body, "yy"), put_str(&body, "");
        bad = one_kv_image("k.sarr", TSR_GGUF_ARRAY, body.p, body.len);
        expect_refused(&bad, TSR_ERR_FORMAT, NULL, "string array length lie");
        free(bad.p);
        free(body.p);
    }
    {
        /* Arrays of arrays exist in the GGUF spec; the reader refuses them
         * (it has no representation for them). It must do so cleanly. */
        buf_t body = {0};
        put_u32(&body, TSR_GGUF_ARRAY);
        put_u64(&body, 2);
        for (int k = 0; k < 2; k++) {
            put_u32(&body, TSR_GGUF_I32);
            put_u64(&body, 2);
            put_u32(&body, 1), put_u32(&body, 2);
        }
        bad = one_kv_image("k.nested", TSR_GGUF_ARRAY, body.p, body.len);
        expect_refused(&bad, TSR_OK, "k.nested", "array of arrays");
        free(bad.p);
        free(body.p);
    }

    /* Alignment. */
    static const struct {
        uint32_t type;
        uint64_t value;
    } aligns[] = {{TSR_GGUF_U32, 48},          {TSR_GGUF_U32, 0},  {TSR_GGUF_U32, 3},
                  {TSR_GGUF_U32, 0xffffffffu}, {TSR_GGUF_U64, 32}, {TSR_GGUF_I32, 32}};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        uint8_t v[8];
        for (int k = 0; k < 8; k++)
            v[k] = (uint8_t)(aligns[i].value >> (8 * k));
        bad = one_kv_image("general.alignment", aligns[i].type, v,
                           aligns[i].type == TSR_GGUF_U64 ? 8 : 4);
        expect_refused(&bad, TSR_ERR_FORMAT, "alignment", "bad general.alignment");
        free(bad.p);
    }
    bad = one_kv_image("general.alignment", TSR_GGUF_STRING,
                       "\x02\0\0\0\0\0\0\0"
                       "32",
                       10);
    expect_refused(&bad, TSR_ERR_FORMAT, "alignment", "string general.alignment");
    free(bad.p);

    /* Tensor descriptors. */
    uint64_t ne5[5] = {2, 2, 2, 2, 2};
    bad = tensor_image(r, 0, ne5, TSR_F32, 0, 64);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "0 dimensions");
    free(bad.p);
    bad = tensor_image(r, 5, ne5, TSR_F32, 0, 128);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "5 dimensions");
    free(bad.p);
    bad = tensor_image(r, 0xffffffffu, ne5, TSR_F32, 0, 128);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "2^32-1 dimensions");
    free(bad.p);
    static const uint64_t bad_ne[][3] = {
        {0, 4, 1},                                                 /* zero dim */
        {4, 0, 1},                                                 /* zero dim */
        {UINT64_C(1) << 41, 1, 1},                                 /* huge dim */
        {UINT64_MAX, 1, 1},                                        /* huge dim */
        {UINT64_C(1) << 40, UINT64_C(1) << 40, UINT64_C(1) << 40}, /* product overflows */
        {UINT64_C(1) << 40, UINT64_C(1) << 23, 1},                 /* bytes overflow */
        {UINT64_C(1) << 40, UINT64_C(1) << 20, 1},                 /* 2^62 bytes */
    };
    for (size_t i = 0; i < sizeof bad_ne / sizeof bad_ne[0]; i++) {
        bad = tensor_image(r, 3, bad_ne[i], TSR_F32, 0, 64);
        expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "bad dimension");
        free(bad.p);
    }
    uint64_t ne2[2] = {4, 2};
    static const uint32_t bad_ttypes[] = {4, 5, 31, 99, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_ttypes / sizeof bad_ttypes[0]; i++) {
        bad = tensor_image(r, 2, ne2, bad_ttypes[i], 0, 64);
        expect_refused(&bad, TSR_OK, "bad.tensor", "unknown tensor type");
        free(bad.p);
    }
    uint64_t ne_q[2] = {33, 2};
    bad = tensor_image(r, 2, ne_q, TSR_Q8_0, 0, 256);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "partial Q8_0 block");
    free(bad.p);
    uint64_t ne_q6[1] = {128};
    bad = tensor_image(r, 1, ne_q6, TSR_Q6_K, 0, 256);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "partial Q6_K block");
    free(bad.p);
    uint64_t ne_iq[2] = {48, 2};
    bad = tensor_image(r, 2, ne_iq, TSR_IQ4_NL, 0, 256);
    expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "partial IQ4_NL block");
    expect_msg_has("iq4_nl [48, 2]", "partial IQ4_NL block");
    expect_msg_has("block size 32", "partial IQ4_NL block");
    free(bad.p);
    /* Issue 15's bad input: an unknown block type, a row that cuts a block,
     * and bytes that disagree with type and shape, each refused with the
     * tensor's name, type and shape. */
    static const uint32_t unknown_ids[] = {9, 15, 16, 21, 29};
    for (size_t i = 0; i < sizeof unknown_ids / sizeof unknown_ids[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "type id %u [4, 2]", unknown_ids[i]);
        bad = tensor_image(r, 2, ne2, unknown_ids[i], 0, 64);
        expect_refused(&bad, TSR_ERR_UNSUPPORTED, "bad.tensor", "unknown block type");
        expect_msg_has(want, "unknown block type");
        free(bad.p);
    }
    static const struct {
        int type;
        const char *name;
    } kq[] = {{TSR_Q2_K, "q2_k"}, {TSR_Q3_K, "q3_k"}, {TSR_Q4_K, "q4_k"}, {TSR_Q5_K, "q5_k"}};
    for (size_t i = 0; i < sizeof kq / sizeof kq[0]; i++) {
        char want[32];
        uint64_t ne_half[2] = {384, 2}, ne_ok[2] = {512, 3}, ne_two[2] = {256, 2};
        size_t bb = tsr_dtype_block_bytes(kq[i].type);
        bad = tensor_image(r, 2, ne_half, (uint32_t)kq[i].type, 0, 4 * bb);
        expect_refused(&bad, TSR_ERR_FORMAT, "bad.tensor", "partial K-quant block");
        snprintf(want, sizeof want, "%s [384, 2]", kq[i].name);
        expect_msg_has(want, "partial K-quant block");
        expect_msg_has("block size 256", "partial K-quant block");
        free(bad.p);
        /* Whole blocks open, with the size the type implies. */
        buf_t ok = tensor_image(r, 2, ne_ok, (uint32_t)kq[i].type, 0, 6 * bb);
        uint8_t *copy;
        CHECK_OK(open_copy(ok.p, ok.len, &g, &copy));
        const tsr_gguf_tensor *t = tsr_gguf_find_tensor(g, "bad.tensor");
        CHECK(t && t->type == kq[i].type && t->nbytes == 6 * bb && t->ne[0] == 512 && t->ne[1] == 3,
              "%s tensor read back", kq[i].name);
        tsr_gguf_close(g);
        g = NULL;
        free(copy);
        free(ok.p);
        /* One block's bytes short of what type and shape imply. */
        bad = tensor_image(r, 2, ne_two, (uint32_t)kq[i].type, 0, bb);
        expect_refused(&bad, TSR_ERR_FORMAT, "past the end", "K-quant tensor one block short");
        snprintf(want, sizeof want, "%s [256, 2]", kq[i].name);
        expect_msg_has(want, "K-quant tensor one block short");
        expect_msg_has("bad.tensor", "K-quant tensor one block short");
        free(bad.p);
    }
    {
        /* A Q4_K tensor of 2 blocks (288 bytes) written in the 160 bytes
         * before the next tensor: its type or shape disagrees with its bytes. */
        uint8_t d[320];
        rand_bytes(r, d, sizeof d);
        uint64_t ne512[1] = {512}, ne16[1] = {16};
        gg_t gg;
        gg_init(&gg, 3, 32);
        gg_tensor_info(&gg, "q.weight", 1, ne512, TSR_Q4_K, 0);
        gg_tensor_info(&gg, "next.weight", 1, ne16, TSR_F32, 160);
        put(&gg.data, d, sizeof d);
        bad = gg_build(&gg);
        expect_refused(&bad, TSR_ERR_FORMAT, "overlap", "size disagrees with type and shape");
        expect_msg_has("'q.weight' (q4_k [512]: 288 bytes", "size disagrees with type and shape");
        expect_msg_has("'next.weight' (f32 [16] at 160)", "size disagrees with type and shape");
        free(bad.p);
        gg_free(&gg);
    }
    bad = tensor_image(r, 2, ne2, TSR_F32, 4, 64);
    expect_refused(&bad, TSR_ERR_FORMAT, "aligned", "unaligned offset");
    free(bad.p);
    bad = tensor_image(r, 2, ne2, TSR_F32, 32, 63); /* 32 bytes at 32, 63 in the file */
    expect_refused(&bad, TSR_ERR_FORMAT, "past the end", "tensor past the end");
    free(bad.p);
    bad = tensor_image(r, 2, ne2, TSR_F32, 0, 31);
    expect_refused(&bad, TSR_ERR_FORMAT, "past the end", "tensor one byte short");
    free(bad.p);
    bad = tensor_image(r, 2, ne2, TSR_F32, UINT64_C(1) << 63, 64);
    expect_refused(&bad, TSR_ERR_FORMAT, "past the end", "offset 2^63");
    free(bad.p);
    bad = tensor_image(r, 2, ne2, TSR_F32, UINT64_MAX - 31, 64);
    expect_refused(&bad, TSR_ERR_FORMAT, NULL, "offset near 2^64");
    free(bad.p);
    {
        /* A tensor exactly filling the file after the header is fine. */
        buf_t ok = tensor_image(r, 2, ne2, TSR_F32, 0, 32);
        CHECK_OK(open_copy(ok.p, ok.len, &g, NULL));
        free(ok.p);
    }

    /* Layout: overlap and duplicates. */
    {
        uint8_t d[128];
        rand_bytes(r, d, sizeof d);
        uint64_t ne16[1] = {16}; /* 64 bytes of f32 */
        static const uint64_t second_at[] = {0, 32};
        for (size_t i = 0; i < 2; i++) {
            gg_t gg;
            gg_init(&gg, 3, 32);
            gg_tensor_info(&gg, "a", 1, ne16, TSR_F32, 0);
            gg_tensor_info(&gg, "b", 1, ne16, TSR_F32, second_at[i]);
            put(&gg.data, d, 128);
            bad = gg_build(&gg);
            expect_refused(&bad, TSR_ERR_FORMAT, "overlap", "overlapping tensors");
            free(bad.p);
            gg_free(&gg);
        }
        /* Adjacent is fine; the same name twice is not. */
        for (int dup = 0; dup < 2; dup++) {
            gg_t gg;
            gg_init(&gg, 3, 32);
            gg_tensor_info(&gg, "a", 1, ne16, TSR_F32, 64);
            gg_tensor_info(&gg, dup ? "a" : "b", 1, ne16, TSR_F32, 0);
            put(&gg.data, d, 128);
            bad = gg_build(&gg);
            if (dup) {
                expect_refused(&bad, TSR_ERR_FORMAT, "twice", "duplicate names");
            } else {
                CHECK_OK(open_copy(bad.p, bad.len, &g, NULL));
            }
            free(bad.p);
            gg_free(&gg);
        }
    }
    free(img.p);
}

/* ---- mutation loop --------------------------------------------------------------- */

/* Opens a mutant; when accepted, touches every byte the handle points at and
 * calls every getter on every key (ASan reports anything outside the copy). */
static void fuzz_one(const uint8_t *img, size_t len, size_t *accepted) {
    uint8_t *c = tu_xmalloc(len);
    if (len)
        memcpy(c, img, len);
    tsr_gguf_t *g = NULL;
    tsr_status st = tsr_gguf_open_memory(c, len, IMG_NAME, &g);
    if (st != TSR_OK) {
        CHECK(g == NULL, "handle on error");
        CHECK(st == TSR_ERR_FORMAT || st == TSR_ERR_UNSUPPORTED, "mutant: status %s",
              tsr_status_str(st));
        CHECK(tsr_error_msg()[0], "mutant refused without a message");
        free(c);
        return;
    }
    (*accepted)++;
    unsigned sum = 0;
    for (size_t i = 0; i < tsr_gguf_n_kv(g); i++) {
        const tsr_gguf_kv *kv = tsr_gguf_kv_at(g, i);
        for (size_t k = 0; k < kv->key.len; k++)
            sum += (uint8_t)kv->key.ptr[k];
        char key[256];
        size_t kl = kv->key.len < sizeof key - 1 ? kv->key.len : sizeof key - 1;
        memcpy(key, kv->key.ptr, kl);
        key[kl] = '\0';
        uint64_t u;
        int64_t iv, *ia = NULL;
        double f, *fa = NULL;
        int b;
        tsr_strref s;
        const tsr_strref *sa;
        uint64_t n;
        (void)tsr_gguf_get_u64(g, key, &u);
        (void)tsr_gguf_get_i64(g, key, &iv);
        (void)tsr_gguf_get_f64(g, key, &f);
        (void)tsr_gguf_get_bool(g, key, &b);
        if (tsr_gguf_get_str(g, key, &s) == TSR_OK)
            for (size_t k = 0; k < s.len; k++)
                sum += (uint8_t)s.ptr[k];
        if (tsr_gguf_get_str_arr(g, key, &sa, &n) == TSR_OK)
            for (uint64_t j = 0; j < n; j++)
                for (size_t k = 0; k < sa[j].len; k++)
                    sum += (uint8_t)sa[j].ptr[k];
        if (tsr_gguf_get_i64_arr(g, key, &ia, &n) == TSR_OK)
            free(ia);
        if (tsr_gguf_get_f64_arr(g, key, &fa, &n) == TSR_OK)
            free(fa);
    }
    for (size_t i = 0; i < tsr_gguf_n_tensors(g); i++) {
        const tsr_gguf_tensor *t = tsr_gguf_tensor_at(g, i);
        const uint8_t *p = t->data;
        CHECK(p >= c && t->nbytes <= len && (size_t)(p - c) <= len - t->nbytes,
              "mutant: tensor outside the image");
        for (uint64_t k = 0; k < t->nbytes; k++)
            sum += p[k];
        for (size_t k = 0; k < t->name.len; k++)
            sum += (uint8_t)t->name.ptr[k];
    }
    (void)sum;
    tsr_gguf_close(g);
    free(c);
}

static void test_fuzz(tu_rng *r, int iters) {
    tensor_exp t[N_TENSORS];
    image_exp e;
    make_tensors(r, t);
    buf_t full = make_full(3, 64, t, &e);
    buf_t small = make_small(r);
    size_t full_data_start =
        full.len - (size_t)(e.t[N_TENSORS - 1].offset + e.t[N_TENSORS - 1].nbytes);
    size_t accepted = 0;
    uint8_t *work = tu_xmalloc(full.len);
    for (int it = 0; it < iters; it++) {
        const buf_t *src = it % 2 ? &full : &small;
        size_t len = src->len;
        memcpy(work, src->p, len);
        int kind = (int)tu_rng_below(r, 4), n = 1 + (int)tu_rng_below(r, 4);
        /* Most mutations land in the header and descriptors, where the
         * parsing is; the data section is opaque to the reader. */
        size_t span = src == &full ? full_data_start : len;
        switch (kind) {
        case 0: /* random bytes */
            for (int k = 0; k < n; k++)
                work[tu_rng_below(r, span)] = (uint8_t)tu_rng_u64(r);
            break;
        case 1: /* bit flips */
            for (int k = 0; k < n; k++)
                work[tu_rng_below(r, span)] ^= (uint8_t)(1u << tu_rng_below(r, 8));
            break;
        case 2: { /* a large value over a would-be length or count */
            size_t at = tu_rng_below(r, span - 8);
            uint64_t v = tu_rng_u64(r) >> tu_rng_below(r, 64);
            for (int k = 0; k < 8; k++)
                work[at + k] = (uint8_t)(v >> (8 * k));
            break;
        }
        default: /* truncate, and maybe flip too */
            len = tu_rng_below(r, len);
            if (len && tu_rng_below(r, 2))
                work[tu_rng_below(r, len)] ^= 0x10;
            break;
        }
        fuzz_one(work, len, &accepted);
    }
    printf("  fuzz: %d mutants, %zu accepted\n", iters, accepted);
    free(work);
    free(full.p);
    free(small.p);
    free_tensors(t);
}

/* ---- real files ------------------------------------------------------------------ */

static void write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f, "cannot create %s", path);
    CHECK(fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

static void test_files(tu_rng *r) {
    const char *base = getenv("TMPDIR");
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/tsr_gguf_test_XXXXXX", base && base[0] ? base : "/tmp");
    CHECK(mkdtemp(dir), "mkdtemp %s", dir);

    tensor_exp t[N_TENSORS];
    image_exp e;
    make_tensors(r, t);
    buf_t img = make_full(3, 64, t, &e);
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    write_file(path, img.p, img.len);
    tsr_gguf_t *g = NULL;
    CHECK_OK(tsr_gguf_open(path, &g));
    /* Where the file is mapped, found from the first tensor. */
    const tsr_gguf_tensor *t0 = tsr_gguf_tensor_at(g, 0);
    size_t data_start = img.len - (size_t)(e.t[N_TENSORS - 1].offset + e.t[N_TENSORS - 1].nbytes);
    check_full(g, (const uint8_t *)t0->data - t0->offset - data_start, img.len, &e);
    tsr_gguf_close(g);
    free_tensors(t);

    /* Truncated on disk. */
    snprintf(path, sizeof path, "%s/short.gguf", dir);
    write_file(path, img.p, img.len - 1);
    g = (tsr_gguf_t *)1;
    CHECK_ERR(tsr_gguf_open(path, &g), TSR_ERR_FORMAT, path);
    CHECK(g == NULL, "handle on error");
    write_file(path, img.p, 10);
    CHECK_ERR(tsr_gguf_open(path, &g), TSR_ERR_FORMAT, path);
    write_file(path, img.p, 0);
    CHECK_ERR(tsr_gguf_open(path, &g), TSR_ERR_FORMAT, path);
    CHECK(unlink(path) == 0, "unlink");
    snprintf(path, sizeof path, "%s/model.gguf", dir);
    CHECK(unlink(path) == 0, "unlink");
    free(img.p);

    /* Paths that do not open: the message names the path. */
    snprintf(path, sizeof path, "%s/does-not-exist.gguf", dir);
    g = (tsr_gguf_t *)1;
    CHECK_ERR(tsr_gguf_open(path, &g), TSR_ERR_IO, path);
    CHECK(g == NULL, "handle on error");
    CHECK_ERR(tsr_gguf_open(dir, &g), TSR_ERR_IO, dir);
    CHECK(rmdir(dir) == 0, "rmdir %s", dir);
}

int main(int argc, char **argv) {
    /* Usage: test_gguf [fuzz_iterations [fuzz_seed]] */
    int iters = argc > 1 ? atoi(argv[1]) : 10000;
    tu_rng r = {argc > 2 ? strtoull(argv[2], NULL, 0) : 0x6775660000000003ull};
    test_valid(&r);
    printf("  valid images ok\n");
    test_truncation(&r);
    printf("  truncations ok\n");
    test_corrupt(&r);
    printf("  corrupt images ok\n");
    test_files(&r);
    printf("  files ok\n");
    test_fuzz(&r, iters);
    printf("test_gguf: all passed\n");
    return 0;
}
