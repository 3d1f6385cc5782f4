/* runtime/model/model.c - loading a shard's weights and the forward pass.
 *
 * Per layer (shapes for n tokens, C = n_embd, local heads/columns):
 *   h = rmsnorm(x) ; q,k,v = h Wq^T, h Wk^T, h Wv^T (+bias) ; rope(q,k)
 *   store k,v in the paged cache ; a = attention(q, cache)
 *   t = a Wo^T ; allreduce(t) ; x += t                 (row-parallel O)
 *   h = rmsnorm(x) ; g = silu(h Wg^T) * (h Wu^T)
 *   t = g Wd^T ; allreduce(t) ; x += t                 (row-parallel down)
 * then on the last stage: logits = rmsnorm(x[out_rows]) E^T (vocab slice). */
#include "runtime/model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void graphs_clear(tsr_model *m);
static tsr_status forward_body(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                               const void *hidden_in, void *hidden_out);
static tsr_status forward_device(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                 const void *hidden_in, void *hidden_out);

tsr_model_slice tsr_model_slice_full(const tsr_model_config *c) {
    tsr_model_slice s = {0};
    s.layer_end = c->n_layer;
    s.n_head = c->n_head;
    s.n_kv_head = c->n_head_kv;
    s.n_ff = c->n_ff;
    s.n_vocab = c->n_vocab;
    return s;
}

/* ---- loading ---- */

/* Rows [row0, row0+nrows) x cols [col0, col0+ncols) of `name` onto the
 * backend: as stored (m->weights == TSR_MODEL_WEIGHTS_FILE, or the file
 * already has the wanted type), else read as f32 and converted. */
static tsr_status load_weight(tsr_model *m, const tsr_model_file_t *mf, const char *name, int row0,
                              int nrows, int col0, int ncols, tsr_weight *w) {
    const int stored = tsr_model_file_type(mf, name);
    const int want = m->weights == TSR_MODEL_WEIGHTS_FILE ? stored : m->weights;
    const size_t f32_bytes = (size_t)nrows * ncols * sizeof(float);
    const size_t want_row = tsr_dtype_row_bytes(want, (uint64_t)ncols);
    if (!want_row)
        return tsr_error_set(
            TSR_ERR_INVALID, "tensor '%s': %d columns cannot be stored as %s (blocks of %zu)", name,
            ncols, tsr_dtype_name(want) ? tsr_dtype_name(want) : "?", tsr_dtype_block(want));
    const size_t want_bytes = (size_t)nrows * want_row;
    if (want == stored && tsr_backend_host_memory(m->be)) {
        /* read straight into the backend's memory, kept there if it can be */
        void *p = NULL;
        tsr_status st = tsr_backend_alloc(m->be, want_bytes, name, &p);
        if (st != TSR_OK)
            return st;
        st = tsr_model_file_read_raw(mf, name, row0, nrows, col0, ncols, p);
        if (st == TSR_OK && tsr_backend_weight_adopt(m->be, w, p, (tsr_dtype)want, nrows, ncols))
            p = NULL;
        else if (st == TSR_OK)
            st = tsr_backend_weight_upload(m->be, w, p, (tsr_dtype)want, nrows, ncols);
        tsr_backend_free(m->be, p);
        tsr_model_file_drop_tensor(mf, name);
        return st;
    }
    const int convert = want != stored && want != TSR_F32; /* quantize at load */
    unsigned char *buf =
        malloc(want != stored ? f32_bytes + (convert ? want_bytes : 0) : want_bytes);
    if (!buf)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory loading '%s'", name);
    tsr_status st;
    const void *src = buf;
    if (want == stored) {
        st = tsr_model_file_read_raw(mf, name, row0, nrows, col0, ncols, buf);
    } else {
        st = tsr_model_file_read(mf, name, row0, nrows, col0, ncols, (float *)buf);
        if (st == TSR_OK && convert) {
            unsigned char *q = buf + f32_bytes;
            for (int r = 0; r < nrows && st == TSR_OK; r++)
                if (!tsr_quantize(want, (const float *)buf + (size_t)r * ncols,
                                  q + (size_t)r * want_row, (size_t)ncols))
                    st = tsr_error_set(TSR_ERR_UNSUPPORTED, "cannot quantize '%s' to %s", name,
                                       tsr_dtype_name(want));
            src = q;
        }
    }
    if (st == TSR_OK)
        st = tsr_backend_weight_upload(m->be, w, src, (tsr_dtype)want, nrows, ncols);
    free(buf);
    tsr_model_file_drop_tensor(mf, name); /* copied out: its file pages need not stay */
    return st;
}

/* A 1-D tensor (norm weight, bias) slice [off, off+n) into activation type. */
static tsr_status load_vector(tsr_model *m, const tsr_model_file_t *mf, const char *name, int off,
                              int n, void **out) {
    float *buf = malloc((size_t)n * sizeof *buf);
    if (!buf)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory loading '%s'", name);
    tsr_status st = tsr_model_file_read(mf, name, 0, 1, off, n, buf);
    if (st == TSR_OK) {
        *out = tsr_backend_vector_upload(m->be, buf, (size_t)n);
        if (!*out)
            st = tsr_error_set(TSR_ERR_NOMEM, "cannot allocate '%s' on %s", name,
                               tsr_backend_name(m->be));
    }
    free(buf);
    return st;
}

/* RoPE inverse frequencies, with the model's scaling, on the device. */
static tsr_status load_inv_freq(tsr_model *m, const tsr_model_file_t *mf) {
    const tsr_model_config *c = &m->cfg;
    int half = c->head_dim / 2;
    float *f = malloc((size_t)half * sizeof *f);
    float *factors = NULL;
    tsr_status st = TSR_OK;
    if (!f)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory for %d RoPE frequencies", half);
    for (int i = 0; i < half; i++) {
        double inv = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
        if (c->rope_scaling == TSR_ROPE_SCALING_LINEAR) {
            inv /= c->rope_factor;
        } else if (c->rope_scaling == TSR_ROPE_SCALING_LLAMA3) {
            /* Llama 3.1: long wavelengths scaled by factor, short ones kept,
             * a smooth blend in between. */
            double wavelen = 2 * M_PI / inv;
            double lo = c->rope_orig_ctx / c->rope_low_freq_factor;
            double hi = c->rope_orig_ctx / c->rope_high_freq_factor;
            if (wavelen > lo) {
                inv /= c->rope_factor;
            } else if (wavelen >= hi) {
                double smooth = (c->rope_orig_ctx / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv = (1 - smooth) * inv / c->rope_factor + smooth * inv;
            }
        }
        f[i] = (float)inv;
    }
    /* GGUF stores Llama 3.1 scaling as per-frequency divisors */
    if (tsr_model_file_has(mf, "rope_freqs.weight")) {
        int r, k;
        TSR_CHECK_GOTO(st, tsr_model_file_shape(mf, "rope_freqs.weight", &r, &k));
        if (r != 1 || k != half) {
            st = tsr_error_set(TSR_ERR_FORMAT, "rope_freqs.weight has %d values, expected %d", k,
                               half);
            goto cleanup;
        }
        factors = malloc((size_t)half * sizeof *factors);
        if (!factors) {
            st = tsr_error_set(TSR_ERR_NOMEM, "out of memory for %d RoPE factors", half);
            goto cleanup;
        }
        TSR_CHECK_GOTO(st, tsr_model_file_read(mf, "rope_freqs.weight", 0, 1, 0, half, factors));
        for (int i = 0; i < half; i++)
            f[i] /= factors[i];
    }
    TSR_CHECK_GOTO(
        st, tsr_backend_alloc(m->be, (size_t)half * sizeof(float), "rope", (void **)&m->inv_freq));
    st = tsr_backend_to_device(m->be, m->inv_freq, f, (size_t)half * sizeof(float));
cleanup:
    free(f);
    free(factors);
    return st;
}

static tsr_status load_layer(tsr_model *m, const tsr_model_file_t *mf, int l,
                             tsr_layer_weights *L) {
    const tsr_model_config *c = &m->cfg;
    const tsr_model_slice *s = &m->slice;
    const int hd = c->head_dim, C = c->n_embd;
    char n[128];
#define NAME(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, l), n)
    TSR_TRY(load_vector(m, mf, NAME("attn_norm.weight"), 0, C, &L->attn_norm));
    TSR_TRY(load_vector(m, mf, NAME("ffn_norm.weight"), 0, C, &L->ffn_norm));
    TSR_TRY(load_weight(m, mf, NAME("attn_q.weight"), s->head_begin * hd, s->n_head * hd, 0, C,
                        &L->wq));
    TSR_TRY(load_weight(m, mf, NAME("attn_k.weight"), s->kv_head_begin * hd, s->n_kv_head * hd, 0,
                        C, &L->wk));
    TSR_TRY(load_weight(m, mf, NAME("attn_v.weight"), s->kv_head_begin * hd, s->n_kv_head * hd, 0,
                        C, &L->wv));
    TSR_TRY(load_weight(m, mf, NAME("attn_output.weight"), 0, C, s->head_begin * hd, s->n_head * hd,
                        &L->wo));
    TSR_TRY(load_weight(m, mf, NAME("ffn_gate.weight"), s->ff_begin, s->n_ff, 0, C, &L->w_gate));
    TSR_TRY(load_weight(m, mf, NAME("ffn_up.weight"), s->ff_begin, s->n_ff, 0, C, &L->w_up));
    TSR_TRY(load_weight(m, mf, NAME("ffn_down.weight"), 0, C, s->ff_begin, s->n_ff, &L->w_down));
    if (c->qkv_bias) {
        TSR_TRY(
            load_vector(m, mf, NAME("attn_q.bias"), s->head_begin * hd, s->n_head * hd, &L->bq));
        TSR_TRY(load_vector(m, mf, NAME("attn_k.bias"), s->kv_head_begin * hd, s->n_kv_head * hd,
                            &L->bk));
        TSR_TRY(load_vector(m, mf, NAME("attn_v.bias"), s->kv_head_begin * hd, s->n_kv_head * hd,
                            &L->bv));
    }
#undef NAME
    return TSR_OK;
}

static tsr_status check_slice(const tsr_model_config *c, const tsr_model_slice *s) {
    if (s->layer_begin < 0 || s->layer_end > c->n_layer || s->layer_begin > s->layer_end ||
        s->head_begin < 0 || s->n_head <= 0 || s->head_begin + s->n_head > c->n_head ||
        s->kv_head_begin < 0 || s->n_kv_head <= 0 ||
        s->kv_head_begin + s->n_kv_head > c->n_head_kv || s->n_head % s->n_kv_head ||
        s->ff_begin < 0 || s->n_ff <= 0 || s->ff_begin + s->n_ff > c->n_ff || s->vocab_begin < 0 ||
        s->n_vocab <= 0 || s->vocab_begin + s->n_vocab > c->n_vocab)
        return tsr_error_set(TSR_ERR_INVALID, "model slice does not fit the model");
    return TSR_OK;
}

/* TSR_NO_CUDA_GRAPHS=1 turns recording off (for comparisons and debugging);
 * read once, at load. */
static int env_graphs_off(void) {
    const char *v = getenv("TSR_NO_CUDA_GRAPHS");
    return v && *v && strcmp(v, "0") != 0;
}

tsr_status tsr_model_load(tsr_model *m, const tsr_model_file_t *mf, const tsr_model_slice *slice,
                          int first_stage, int last_stage, int weights, tsr_backend *be,
                          const tsr_model_comm *comm) {
    memset(m, 0, sizeof *m);
    m->weights = weights;
    m->cfg = *tsr_model_file_config(mf);
    m->slice = *slice;
    m->be = be;
    if (comm)
        m->comm = *comm;
    m->first_stage = first_stage;
    m->last_stage = last_stage;
    m->graphs_off = env_graphs_off();
    tsr_status st;
    TSR_CHECK_GOTO(st, check_slice(&m->cfg, slice));
    const int C = m->cfg.n_embd;
    if (first_stage || (last_stage && m->cfg.tied_embeddings))
        TSR_CHECK_GOTO(st, load_weight(m, mf, "token_embd.weight", slice->vocab_begin,
                                       slice->n_vocab, 0, C, &m->tok_embd));
    if (last_stage) {
        TSR_CHECK_GOTO(st, load_vector(m, mf, "output_norm.weight", 0, C, &m->out_norm));
        if (m->cfg.tied_embeddings) {
            m->lm_head = m->tok_embd;
            m->lm_head_shared = 1;
        } else {
            TSR_CHECK_GOTO(st, load_weight(m, mf, "output.weight", slice->vocab_begin,
                                           slice->n_vocab, 0, C, &m->lm_head));
        }
    }
    int nl = slice->layer_end - slice->layer_begin;
    m->layers = calloc((size_t)(nl ? nl : 1), sizeof *m->layers);
    if (!m->layers) {
        st = tsr_error_set(TSR_ERR_NOMEM, "out of memory for %d layers", nl);
        goto cleanup;
    }
    for (int i = 0; i < nl; i++)
        TSR_CHECK_GOTO(st, load_layer(m, mf, slice->layer_begin + i, &m->layers[i]));
    TSR_CHECK_GOTO(st, load_inv_freq(m, mf));
    return TSR_OK;
cleanup:
    tsr_model_free(m);
    return st;
}

static void ws_free(tsr_model *m) {
    tsr_forward_ws *w = &m->ws;
    void *bufs[] = {w->x,  w->h,   w->q,   w->k,   w->v,    w->att,    w->tmp,   w->gate,
                    w->up, w->ids, w->pos, w->seq, w->slot, w->tables, w->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        tsr_backend_free(m->be, bufs[i]);
    memset(w, 0, sizeof *w);
}

void tsr_model_free(tsr_model *m) {
    if (!m || !m->be)
        return;
    tsr_backend *be = m->be;
    int nl = m->slice.layer_end - m->slice.layer_begin;
    for (int i = 0; m->layers && i < nl; i++) {
        tsr_layer_weights *L = &m->layers[i];
        tsr_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++)
            tsr_backend_weight_free(be, ws[j]);
        void *vs[] = {L->attn_norm, L->ffn_norm, L->bq, L->bk, L->bv};
        for (size_t j = 0; j < sizeof vs / sizeof vs[0]; j++)
            tsr_backend_free(be, vs[j]);
    }
    free(m->layers);
    tsr_backend_weight_free(be, &m->tok_embd);
    if (!m->lm_head_shared)
        tsr_backend_weight_free(be, &m->lm_head);
    tsr_backend_free(be, m->out_norm);
    tsr_backend_free(be, m->inv_freq);
    graphs_clear(m);
    ws_free(m);
    tsr_backend_free(be, m->lora_xa);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

/* lora_r: the largest LoRA rank the forward applies (0: none). */
static tsr_status ws_reserve(tsr_model *m, int n_tokens, int n_out, int tables_len, int lora_r) {
    tsr_forward_ws *w = &m->ws;
    tsr_backend *be = m->be;
    const tsr_model_config *c = &m->cfg;
    const tsr_model_slice *s = &m->slice;
    size_t a = tsr_backend_act_size(be);
    if (n_tokens > w->max_tokens || n_out > w->max_out) {
        int nt = n_tokens > w->max_tokens ? n_tokens : w->max_tokens;
        int no = n_out > w->max_out ? n_out : w->max_out;
        graphs_clear(m); /* recorded graphs hold the old addresses */
        m->ws_gen++;
        ws_free(m); /* also drops the tables, reallocated below */
        size_t t = (size_t)nt;
        TSR_TRY(tsr_backend_alloc(be, t * c->n_embd * a, "activations", &w->x));
        TSR_TRY(tsr_backend_alloc(be, t * c->n_embd * a, "activations", &w->h));
        TSR_TRY(tsr_backend_alloc(be, t * c->n_embd * a, "activations", &w->tmp));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_head * c->head_dim * a, "activations", &w->q));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_head * c->head_dim * a, "activations", &w->att));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_kv_head * c->head_dim * a, "activations", &w->k));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_kv_head * c->head_dim * a, "activations", &w->v));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_ff * a, "activations", &w->gate));
        TSR_TRY(tsr_backend_alloc(be, t * s->n_ff * a, "activations", &w->up));
        TSR_TRY(tsr_backend_alloc(be, t * 4, "ids", (void **)&w->ids));
        TSR_TRY(tsr_backend_alloc(be, t * 4, "positions", (void **)&w->pos));
        TSR_TRY(tsr_backend_alloc(be, t * 4, "sequences", (void **)&w->seq));
        TSR_TRY(tsr_backend_alloc(be, t * 4, "slots", (void **)&w->slot));
        TSR_TRY(
            tsr_backend_alloc(be, (size_t)(no ? no : 1) * s->n_vocab * a, "logits", &w->logits));
        w->max_tokens = nt;
        w->max_out = no;
    }
    if (tables_len > w->tables_cap) {
        graphs_clear(m);
        m->ws_gen++;
        tsr_backend_free(be, w->tables);
        w->tables = NULL;
        w->tables_cap = 0;
        TSR_TRY(tsr_backend_alloc(be, (size_t)tables_len * 4, "block tables", (void **)&w->tables));
        w->tables_cap = tables_len;
    }
    if (lora_r > 0) { /* x A^T of one target at a time: (max_tokens, r) f32 */
        size_t need = (size_t)w->max_tokens * (size_t)lora_r;
        if (need > m->lora_xa_cap) {
            graphs_clear(m);
            m->ws_gen++;
            tsr_backend_free(be, m->lora_xa);
            m->lora_xa = NULL;
            m->lora_xa_cap = 0;
            TSR_TRY(
                tsr_backend_alloc(be, need * sizeof(float), "LoRA scratch", (void **)&m->lora_xa));
            m->lora_xa_cap = need;
        }
    }
    return TSR_OK;
}

#define OP(call)                                                                                   \
    do {                                                                                           \
        tsr_status op_s_ = (call);                                                                 \
        if (op_s_ != TSR_OK)                                                                       \
            return op_s_;                                                                          \
    } while (0)

static tsr_status allreduce(tsr_model *m, void *buf, size_t count) {
    if (!m->comm.allreduce_sum)
        return TSR_OK;
    return m->comm.allreduce_sum(m->comm.ctx, buf, count);
}

/* y(n, n_out local) += adapter a's delta of (local layer li, target t) on
 * x(n, n_in local); nothing without an adapter or when t is not adapted. */
static tsr_status lora_add_one(tsr_model *m, const tsr_lora_adapter *a, int li, tsr_lora_target t,
                               void *y, const void *x, int n) {
    if (!a || n <= 0)
        return TSR_OK;
    const tsr_lora_matrix *lm = &a->mats[(size_t)li * TSR_LORA_N_TARGETS + t];
    if (!lm->present)
        return TSR_OK;
    return tsr_backend_lora_fwd(m->be, y, x, lm->A, lm->B, m->lora_xa, n, lm->n_in, lm->n_out,
                                a->cfg.rank, a->scale);
}

/* The model's adapter on every row, or each segment's on its rows (rows
 * are contiguous per segment, so a segment is a pointer offset into x and
 * y: a loop of small LoRA GEMMs, one per adapter in the batch). */
static tsr_status lora_add(tsr_model *m, int li, tsr_lora_target t, void *y, const void *x, int n) {
    if (m->n_seg == 0)
        return lora_add_one(m, m->lora, li, t, y, x, n);
    const size_t act = tsr_backend_act_size(m->be);
    for (int k = 0; k < m->n_seg; k++) {
        const tsr_lora_seg *sg = &m->seg[k];
        if (!sg->a)
            continue;
        const tsr_lora_matrix *lm = &sg->a->mats[(size_t)li * TSR_LORA_N_TARGETS + t];
        if (!lm->present)
            continue;
        TSR_TRY(lora_add_one(m, sg->a, li, t, (char *)y + (size_t)sg->begin * lm->n_out * act,
                             (const char *)x + (size_t)sg->begin * lm->n_in * act,
                             sg->end - sg->begin));
    }
    return TSR_OK;
}

static tsr_status layer_forward(tsr_model *m, tsr_kv_cache *kv, int li, int n,
                                const tsr_attn_desc *ad) {
    tsr_backend *be = m->be;
    const tsr_model_config *c = &m->cfg;
    const tsr_layer_weights *L = &m->layers[li];
    tsr_forward_ws *w = &m->ws;
    const int C = c->n_embd, hd = c->head_dim;
    const int qd = m->slice.n_head * hd, kvd = m->slice.n_kv_head * hd;

    OP(tsr_backend_rmsnorm(be, w->h, w->x, L->attn_norm, n, C, c->rms_eps));
    OP(tsr_backend_matmul(be, w->q, w->h, &L->wq, n, 0));
    OP(tsr_backend_matmul(be, w->k, w->h, &L->wk, n, 0));
    OP(tsr_backend_matmul(be, w->v, w->h, &L->wv, n, 0));
    if (L->bq) {
        OP(tsr_backend_add_bias(be, w->q, L->bq, n, qd));
        OP(tsr_backend_add_bias(be, w->k, L->bk, n, kvd));
        OP(tsr_backend_add_bias(be, w->v, L->bv, n, kvd));
    }
    OP(lora_add(m, li, TSR_LORA_Q, w->q, w->h, n)); /* linear: the order with the bias is free */
    OP(lora_add(m, li, TSR_LORA_K, w->k, w->h, n));
    OP(lora_add(m, li, TSR_LORA_V, w->v, w->h, n));
    OP(tsr_backend_rope(be, w->q, w->pos, m->inv_freq, n, m->slice.n_head, hd));
    OP(tsr_backend_rope(be, w->k, w->pos, m->inv_freq, n, m->slice.n_kv_head, hd));
    OP(tsr_backend_kv_store(be, kv->k[li], kv->v[li], kv->dtype, w->k, w->v, w->slot, n, kvd));
    OP(tsr_backend_attention(be, w->att, w->q, kv->k[li], kv->v[li], ad));
    OP(tsr_backend_matmul(be, w->tmp, w->att, &L->wo, n, 0));
    OP(lora_add(m, li, TSR_LORA_O, w->tmp, w->att, n)); /* a partial sum, as the matmul's */
    OP(allreduce(m, w->tmp, (size_t)n * C));
    OP(tsr_backend_add(be, w->x, w->tmp, n, C));

    OP(tsr_backend_rmsnorm(be, w->h, w->x, L->ffn_norm, n, C, c->rms_eps));
    OP(tsr_backend_matmul(be, w->gate, w->h, &L->w_gate, n, 0));
    OP(tsr_backend_matmul(be, w->up, w->h, &L->w_up, n, 0));
    OP(lora_add(m, li, TSR_LORA_GATE, w->gate, w->h, n));
    OP(lora_add(m, li, TSR_LORA_UP, w->up, w->h, n));
    OP(tsr_backend_swiglu(be, w->gate, w->gate, w->up, n, m->slice.n_ff));
    OP(tsr_backend_matmul(be, w->tmp, w->gate, &L->w_down, n, 0));
    OP(lora_add(m, li, TSR_LORA_DOWN, w->tmp, w->gate, n)); /* a partial sum */
    OP(allreduce(m, w->tmp, (size_t)n * C));
    OP(tsr_backend_add(be, w->x, w->tmp, n, C));
    return TSR_OK;
}

/* ---- CUDA graphs for decode-shaped steps ----
 * A step launches ~16 kernels a layer; for small batches the launches, not
 * the GPU, set the pace. Where the backend can record graphs, a forward whose
 * shape repeats is recorded the second time it is seen and replayed from then
 * on. The key is everything a recording bakes in: the token count, the KV
 * cache, the workspace generation (the buffer addresses; positions, slots
 * and block tables are read from device memory, so their values may change)
 * and the adapter generation (tsr_model_set_lora: its A/B addresses and
 * which launches there are). Only steps that need no collective inside the forward (one TP
 * rank) and whose output rows are the whole batch in order (decode steps)
 * qualify; metadata is copied to the device before the replay. */

static void graph_forget(tsr_model *m, tsr_fwd_graph *g) {
    if (g->graph)
        tsr_backend_graph_free(m->be, g->graph);
    memset(g, 0, sizeof *g);
}

static void graphs_clear(tsr_model *m) {
    for (int i = 0; i < TSR_FWD_GRAPHS; i++)
        if (m->graphs[i].n_tokens)
            graph_forget(m, &m->graphs[i]);
}

/* *out: the cache entry for this step (graph NULL when seen once only), or
 * NULL when the step does not qualify or is seen for the first time (then
 * an entry is made, so the next one records). */
static tsr_status graph_lookup(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                               tsr_fwd_graph **out) {
    *out = NULL;
    if (!tsr_backend_has_graphs(m->be) || m->comm.allreduce_sum || !m->first_stage ||
        !m->last_stage || b->n_lora > 0 || b->n_out != b->n_tokens ||
        b->n_tokens > TSR_FWD_GRAPH_MAX_TOKENS || m->graphs_off)
        return TSR_OK;
    for (int i = 0; i < b->n_out; i++)
        if (b->out_rows[i] != i)
            return TSR_OK;
    for (int i = 0; i < TSR_FWD_GRAPHS; i++) {
        tsr_fwd_graph *g = &m->graphs[i];
        if (g->n_tokens == b->n_tokens && g->kv == kv && g->ws_gen == m->ws_gen &&
            g->lora_gen == m->lora_gen) {
            *out = g;
            return TSR_OK;
        }
    }
    /* first sight: remember it (evicting round-robin) and run uncaptured */
    tsr_fwd_graph *g = &m->graphs[m->next_graph];
    m->next_graph = (m->next_graph + 1) % TSR_FWD_GRAPHS;
    graph_forget(m, g);
    g->n_tokens = b->n_tokens;
    g->kv = kv;
    g->ws_gen = m->ws_gen;
    g->lora_gen = m->lora_gen;
    return TSR_OK;
}

/* The forward; the last stage's output is the logits (logits != NULL), each
 * row's argmax (best_val, best_idx; top_k 0) or each row's top_k best
 * (best_val, best_idx of (n_out, top_k)). */
static tsr_status forward(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b, const void *hidden_in,
                          void *hidden_out, float *logits, float *best_val, int32_t *best_idx,
                          int top_k) {
    tsr_backend *be = m->be;
    const tsr_model_config *c = &m->cfg;
    const int n = b->n_tokens;
    m->last_n_out = 0;
    if (n <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "forward: empty batch");
    if (m->last_stage && (b->n_out < 0 || b->n_out > n))
        return tsr_error_set(TSR_ERR_INVALID, "forward: %d output rows for %d tokens", b->n_out, n);
    int32_t *slots = malloc((size_t)n * sizeof *slots);
    if (!slots)
        return tsr_error_set(TSR_ERR_NOMEM, "forward: out of memory for %d KV slots", n);
    int max_seq = 0;
    for (int i = 0; i < n; i++) {
        if (b->seq[i] < 0 || b->seq[i] >= kv->max_seqs || b->pos[i] < 0 ||
            b->pos[i] >= kv->n_seq_blocks[b->seq[i]] * kv->block_size) {
            free(slots);
            return tsr_error_set(
                TSR_ERR_INVALID,
                "forward: token %d (sequence %d, position %d) has no KV space reserved", i,
                b->seq[i], b->pos[i]);
        }
        if (m->first_stage && (b->tokens[i] < 0 || b->tokens[i] >= c->n_vocab)) {
            free(slots);
            return tsr_error_set(TSR_ERR_RANGE,
                                 "forward: token id %d is outside the vocabulary (0..%d)",
                                 b->tokens[i], c->n_vocab - 1);
        }
        slots[i] = tsr_kv_cache_slot(kv, b->seq[i], b->pos[i]);
        if (b->seq[i] > max_seq)
            max_seq = b->seq[i];
    }
    for (int i = 0; m->last_stage && i < b->n_out; i++)
        if (b->out_rows[i] < 0 || b->out_rows[i] >= n) {
            free(slots);
            return tsr_error_set(TSR_ERR_INVALID, "forward: output row %d is outside the batch",
                                 b->out_rows[i]);
        }
    int lora_r = m->lora ? m->lora->cfg.rank : 0;
    if (b->n_lora < 0 || (b->n_lora > 0 && !b->lora)) {
        free(slots);
        return tsr_error_set(TSR_ERR_INVALID, "forward: bad LoRA segment list");
    }
    for (int k = 0; k < b->n_lora; k++) {
        const tsr_lora_seg *sg = &b->lora[k];
        if (sg->begin < 0 || sg->end < sg->begin || sg->end > n || (sg->a && sg->a->be != m->be)) {
            free(slots);
            return tsr_error_set(TSR_ERR_INVALID,
                                 "forward: LoRA segment [%d, %d) outside the batch of %d or on "
                                 "another backend",
                                 sg->begin, sg->end, n);
        }
        if (sg->a && sg->a->cfg.rank > lora_r)
            lora_r = sg->a->cfg.rank;
    }
    int tables_len = (max_seq + 1) * kv->max_blocks;
    tsr_status st = ws_reserve(m, n, m->last_stage ? b->n_out : 0, tables_len, lora_r);
    tsr_forward_ws *w = &m->ws;
    if (st == TSR_OK)
        st = tsr_backend_to_device(be, w->pos, b->pos, (size_t)n * 4);
    if (st == TSR_OK)
        st = tsr_backend_to_device(be, w->seq, b->seq, (size_t)n * 4);
    if (st == TSR_OK)
        st = tsr_backend_to_device(be, w->slot, slots, (size_t)n * 4);
    if (st == TSR_OK)
        st = tsr_backend_to_device(be, w->tables, kv->tables, (size_t)tables_len * 4);
    if (st == TSR_OK && m->first_stage)
        st = tsr_backend_to_device(be, w->ids, b->tokens, (size_t)n * 4);
    free(slots);
    if (st != TSR_OK)
        return st;

    /* the device work: replayed from a CUDA graph where one applies */
    m->seg = b->n_lora > 0 ? b->lora : NULL;
    m->n_seg = b->n_lora > 0 ? b->n_lora : 0;
    st = forward_device(m, kv, b, hidden_in, hidden_out);
    m->seg = NULL;
    m->n_seg = 0;
    TSR_TRY(st);
    if (!m->last_stage || b->n_out == 0)
        return TSR_OK;
    m->last_n_out = b->n_out;
    if (!logits && top_k > 0)
        return tsr_backend_topk(be, best_val, best_idx, w->logits, b->n_out, m->slice.n_vocab,
                                top_k);
    if (!logits)
        return tsr_backend_argmax(be, best_val, best_idx, w->logits, b->n_out, m->slice.n_vocab);
    return tsr_backend_act_to_f32(be, logits, w->logits, (size_t)b->n_out * m->slice.n_vocab);
}

/* The forward's device work, replayed from a CUDA graph where one applies. */
static tsr_status forward_device(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                 const void *hidden_in, void *hidden_out) {
    tsr_backend *be = m->be;
    tsr_fwd_graph *gr = NULL;
    TSR_TRY(graph_lookup(m, kv, b, &gr));
    if (gr && gr->graph) {
        TSR_TRY(tsr_backend_graph_launch(be, gr->graph));
    } else if (gr) { /* seen before, not yet recorded: record, then replay */
        TSR_TRY(tsr_backend_capture_begin(be));
        tsr_status body = forward_body(m, kv, b, hidden_in, hidden_out);
        void *graph = NULL;
        tsr_status end = tsr_backend_capture_end(be, &graph);
        if (body != TSR_OK || end != TSR_OK) {
            tsr_backend_graph_free(be, graph);
            graph_forget(m, gr);
            return body != TSR_OK ? body : end;
        }
        gr->graph = graph;
        TSR_TRY(tsr_backend_graph_launch(be, graph));
    } else {
        TSR_TRY(forward_body(m, kv, b, hidden_in, hidden_out));
    }
    return TSR_OK;
}

/* The forward's device work from the metadata on the device to the logits
 * in w->logits (last stage) or hidden_out (other stages): only device-side
 * ops, so that it can be recorded in a graph. */
static tsr_status forward_body(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                               const void *hidden_in, void *hidden_out) {
    tsr_backend *be = m->be;
    const tsr_model_config *c = &m->cfg;
    tsr_forward_ws *w = &m->ws;
    const int n = b->n_tokens, C = c->n_embd;
    size_t a = tsr_backend_act_size(be);
    if (m->first_stage) {
        OP(tsr_backend_embedding(be, w->x, &m->tok_embd, w->ids, n, m->slice.vocab_begin));
        OP(allreduce(m, w->x, (size_t)n * C)); /* vocab-parallel: one rank had each row */
    } else {
        if (!hidden_in)
            return tsr_error_set(TSR_ERR_INVALID, "forward: a later stage needs hidden_in");
        OP(tsr_backend_copy(be, w->x, hidden_in, (size_t)n * C * a));
    }
    tsr_attn_desc ad = {
        .n_tokens = n,
        .n_head = m->slice.n_head,
        .n_kv_head = m->slice.n_kv_head,
        .head_dim = c->head_dim,
        .block_size = kv->block_size,
        .max_blocks = kv->max_blocks,
        .kv_dtype = kv->dtype,
        .scale = 1.0f / sqrtf((float)c->head_dim),
        .pos = w->pos,
        .seq = w->seq,
        .block_tables = w->tables,
    };
    int nl = m->slice.layer_end - m->slice.layer_begin;
    for (int li = 0; li < nl; li++)
        OP(layer_forward(m, kv, li, n, &ad));

    if (!m->last_stage) {
        if (!hidden_out)
            return tsr_error_set(TSR_ERR_INVALID, "forward: a non-last stage needs hidden_out");
        return tsr_backend_copy(be, hidden_out, w->x, (size_t)n * C * a);
    }
    if (b->n_out == 0)
        return TSR_OK;
    for (int i = 0; i < b->n_out; i++)
        OP(tsr_backend_copy(be, (char *)w->h + (size_t)i * C * a,
                            (char *)w->x + (size_t)b->out_rows[i] * C * a, (size_t)C * a));
    OP(tsr_backend_rmsnorm(be, w->h, w->h, m->out_norm, b->n_out, C, c->rms_eps));
    return tsr_backend_matmul(be, w->logits, w->h, &m->lm_head, b->n_out, 0);
}

tsr_status tsr_model_forward(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                             const void *hidden_in, void *hidden_out, float *logits) {
    if (m->last_stage && b->n_out > 0 && !logits)
        return tsr_error_set(TSR_ERR_INVALID, "forward: no buffer for the logits");
    return forward(m, kv, b, hidden_in, hidden_out, logits, NULL, NULL, 0);
}

tsr_status tsr_model_forward_greedy(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                    const void *hidden_in, void *hidden_out, float *best_val,
                                    int32_t *best_idx) {
    if (m->last_stage && b->n_out > 0 && (!best_val || !best_idx))
        return tsr_error_set(TSR_ERR_INVALID, "forward: no buffers for the greedy picks");
    return forward(m, kv, b, hidden_in, hidden_out, NULL, best_val, best_idx, 0);
}

tsr_status tsr_model_forward_topk(tsr_model *m, tsr_kv_cache *kv, const tsr_batch *b,
                                  const void *hidden_in, void *hidden_out, int k, float *top_val,
                                  int32_t *top_idx) {
    if (m->last_stage && b->n_out > 0) {
        if (!top_val || !top_idx)
            return tsr_error_set(TSR_ERR_INVALID, "forward: no buffers for the top-k picks");
        if (!tsr_backend_has_topk(m->be))
            return tsr_error_set(TSR_ERR_UNSUPPORTED, "forward: backend %s has no top-k op",
                                 tsr_backend_name(m->be));
        if (k < 1 || k > TSR_TOPK_MAX)
            return tsr_error_set(TSR_ERR_INVALID, "forward: top-k of %d (must be in 1..%d)", k,
                                 TSR_TOPK_MAX);
    }
    return forward(m, kv, b, hidden_in, hidden_out, NULL, top_val, top_idx, k);
}

tsr_status tsr_model_row_expsum(tsr_model *m, const float *inv_t, float *out) {
    if (!m->last_stage || m->last_n_out <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "model: no output rows of a forward to sum");
    if (!tsr_backend_has_row_expsum(m->be))
        return tsr_error_set(TSR_ERR_UNSUPPORTED, "model: backend %s has no row_expsum op",
                             tsr_backend_name(m->be));
    return tsr_backend_row_expsum(m->be, out, m->ws.logits, inv_t, m->last_n_out, m->slice.n_vocab);
}

tsr_status tsr_model_logits_rows(tsr_model *m, const int32_t *rows, int n, float *out) {
    const int V = m->slice.n_vocab;
    const size_t a = tsr_backend_act_size(m->be);
    if (!m->last_stage || m->last_n_out <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "model: no output rows of a forward to copy");
    for (int i = 0; i < n; i++) {
        if (rows[i] < 0 || rows[i] >= m->last_n_out)
            return tsr_error_set(TSR_ERR_INVALID, "model: output row %d of %d", rows[i],
                                 m->last_n_out);
        TSR_TRY(tsr_backend_act_to_f32(m->be, out + (size_t)i * V,
                                       (const char *)m->ws.logits + (size_t)rows[i] * V * a,
                                       (size_t)V));
    }
    return TSR_OK;
}

/* ---- LoRA ---- */

/* The slice of the weight (layer, t) this rank holds, as [in_begin, +n_in)
 * columns and [out_begin, +n_out) rows of the full (d_out, d_in). */
static void target_slice(const tsr_model *m, tsr_lora_target t, int *in_begin, int *n_in,
                         int *out_begin, int *n_out) {
    const tsr_model_config *c = &m->cfg;
    const tsr_model_slice *s = &m->slice;
    const int hd = c->head_dim, C = c->n_embd;
    *in_begin = 0;
    *n_in = C;
    *out_begin = 0;
    *n_out = C;
    switch (t) {
    case TSR_LORA_Q:
        *out_begin = s->head_begin * hd;
        *n_out = s->n_head * hd;
        break;
    case TSR_LORA_K:
    case TSR_LORA_V:
        *out_begin = s->kv_head_begin * hd;
        *n_out = s->n_kv_head * hd;
        break;
    case TSR_LORA_O:
        *in_begin = s->head_begin * hd;
        *n_in = s->n_head * hd;
        break;
    case TSR_LORA_GATE:
    case TSR_LORA_UP:
        *out_begin = s->ff_begin;
        *n_out = s->n_ff;
        break;
    case TSR_LORA_DOWN:
        *in_begin = s->ff_begin;
        *n_in = s->n_ff;
        break;
    default: break;
    }
}

tsr_status tsr_model_set_lora(tsr_model *m, const tsr_lora_adapter *a) {
    graphs_clear(m); /* recorded graphs launch the old adapter's kernels (or none) */
    m->lora_gen++;
    m->lora = NULL;
    if (!a)
        return TSR_OK;
    TSR_TRY(tsr_model_check_lora(m, a));
    m->lora = a;
    return TSR_OK;
}

tsr_status tsr_model_check_lora(const tsr_model *m, const tsr_lora_adapter *a) {
    const tsr_model_config *c = &m->cfg, *ac = &a->mcfg;
    const int nl = m->slice.layer_end - m->slice.layer_begin;
    if (a->be != m->be)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter: made for another backend than the model's");
    if (ac->n_layer != c->n_layer || ac->n_embd != c->n_embd || ac->n_head != c->n_head ||
        ac->n_head_kv != c->n_head_kv || ac->head_dim != c->head_dim || ac->n_ff != c->n_ff)
        return tsr_error_set(TSR_ERR_INVALID,
                             "LoRA adapter: made for another model (%d layers, n_embd %d, n_ff %d; "
                             "this model has %d, %d, %d)",
                             ac->n_layer, ac->n_embd, ac->n_ff, c->n_layer, c->n_embd, c->n_ff);
    if (a->layer_begin != m->slice.layer_begin || a->n_layers != nl)
        return tsr_error_set(
            TSR_ERR_INVALID, "LoRA adapter: holds layers %d..%d, this shard %d..%d", a->layer_begin,
            a->layer_begin + a->n_layers - 1, m->slice.layer_begin, m->slice.layer_end - 1);
    if (a->cfg.rank < 1 || !(isfinite(a->scale)))
        return tsr_error_set(TSR_ERR_INVALID, "LoRA adapter: bad rank %d or scale", a->cfg.rank);
    for (int li = 0; li < nl; li++)
        for (int t = 0; t < TSR_LORA_N_TARGETS; t++) {
            const tsr_lora_matrix *lm = &a->mats[(size_t)li * TSR_LORA_N_TARGETS + t];
            if (!lm->present)
                continue;
            int ib, ni, ob, no;
            target_slice(m, (tsr_lora_target)t, &ib, &ni, &ob, &no);
            if (lm->layer != m->slice.layer_begin + li || lm->in_begin != ib || lm->n_in != ni ||
                lm->out_begin != ob || lm->n_out != no || !lm->A || !lm->B)
                return tsr_error_set(TSR_ERR_INVALID,
                                     "LoRA adapter: layer %d %s holds inputs %d+%d, outputs %d+%d; "
                                     "this shard has %d+%d, %d+%d",
                                     lm->layer, tsr_lora_target_name((tsr_lora_target)t),
                                     lm->in_begin, lm->n_in, lm->out_begin, lm->n_out, ib, ni, ob,
                                     no);
        }
    return TSR_OK;
}
