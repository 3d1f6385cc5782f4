/* runtime/engine/engine.c - the step protocol: rank 0 checks a step and
 * broadcasts its descriptor, every rank runs it micro-batched through the
 * pipeline (engine_results.c turns the last stage's output into the step's
 * results), peers wait in tsr_engine_serve; and one sequence as a tsr_lm.
 * See engine.h for the protocol. Not here: setting the engine up
 * (engine_setup.c), moving buffers between ranks (xfer.c), training
 * (engine_train.c). */
#include "runtime/engine/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/engine/engine_internal.h"

#define DESC_MAGIC 0x54535231u /* "TSR1" */

/* Fixed part of a descriptor; the int32 arrays follow in a second broadcast:
 * tokens, pos, seq (n_tokens each), out_rows (n_out), release (n_release),
 * seg (3 n_seg), then with has_draw the rows' tsr_row_draw (n_out). */
typedef struct {
    uint32_t magic, kind;
    int32_t n_tokens, n_out, out, n_release, n_seg;
    int32_t top_k;
    int32_t has_draw; /* the n_out tsr_row_draw follow the int32 arrays, as bytes */
} desc_header;

_Static_assert(sizeof(tsr_row_draw) % 4 == 0, "row draws travel as int32 words");

/* ---- step execution (every rank) ---- */

/* The sequences of a step in order of first appearance, with the number of
 * positions each needs; the same on every rank, so KV allocation agrees. */
static int step_seqs(const tsr_step *s, int32_t *seqs, int32_t *npos) {
    int n = 0;
    for (int i = 0; i < s->n_tokens; i++) {
        int k = 0;
        while (k < n && seqs[k] != s->seq[i])
            k++;
        if (k == n) {
            seqs[n] = s->seq[i];
            npos[n++] = 0;
        }
        if (s->pos[i] + 1 > npos[k])
            npos[k] = s->pos[i] + 1;
    }
    return n;
}

/* Rank 0's check of a step before it is broadcast: afterwards every rank's
 * reserve calls succeed. */
static tsr_status validate_step(const tsr_engine *e, const tsr_step *s) {
    const tsr_kv_cache *kv = &e->kv;
    if (s->n_tokens < 0 || (s->n_tokens == 0 && s->n_release == 0))
        return tsr_error_set(TSR_ERR_INVALID, "step: no tokens and nothing to release");
    if (s->out < TSR_OUT_NONE || s->out > TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: output kind %d", (int)s->out);
    if (s->out == TSR_OUT_TOPK && (s->top_k < 1 || s->top_k > TSR_TOPK_MAX))
        return tsr_error_set(TSR_ERR_INVALID, "step: top_k %d (must be in 1..%d)", s->top_k,
                             TSR_TOPK_MAX);
    if (s->draw && s->out != TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: row draws without a top-k output");
    for (int i = 0; s->draw && i < s->n_out; i++) {
        const tsr_row_draw *d = &s->draw[i];
        if (d->mode < TSR_DRAW_CAND || d->mode > TSR_DRAW_WHOLE)
            return tsr_error_set(TSR_ERR_INVALID, "step: row %d draw mode %d", i, (int)d->mode);
        if (d->mode == TSR_DRAW_ROW_TOP &&
            (!(d->temperature > 0) || !isfinite(d->temperature) || !(d->top_p > 0) ||
             !(d->top_p <= 1) || !(d->min_p >= 0) || !(d->min_p < 1) || !(d->u >= 0) ||
             !(d->u < 1)))
            return tsr_error_set(
                TSR_ERR_INVALID, "step: row %d draw (T %g, top_p %g, min_p %g, u %g) out of range",
                i, (double)d->temperature, (double)d->top_p, (double)d->min_p, d->u);
    }
    if (s->n_out < 0 || s->n_out > s->n_tokens || (s->out != TSR_OUT_NONE && s->n_out == 0))
        return tsr_error_set(TSR_ERR_INVALID, "step: %d output rows for %d tokens", s->n_out,
                             s->n_tokens);
    for (int i = 0; i < s->n_out; i++)
        if (s->out_rows[i] < 0 || s->out_rows[i] >= s->n_tokens)
            return tsr_error_set(TSR_ERR_INVALID, "step: output row %d outside the step",
                                 s->out_rows[i]);
    for (int i = 0; i < s->n_release; i++)
        if (s->release[i] < 0 || s->release[i] >= kv->max_seqs)
            return tsr_error_set(TSR_ERR_INVALID, "step: release of slot %d", s->release[i]);
    if (s->n_seg < 0 || (s->n_seg > 0 && !s->seg))
        return tsr_error_set(TSR_ERR_INVALID, "step: bad LoRA segment list");
    for (int k = 0; k < s->n_seg; k++) {
        const int32_t *g = s->seg + 3 * k;
        if (g[0] < 0 || g[1] < g[0] || g[1] > s->n_tokens)
            return tsr_error_set(TSR_ERR_INVALID, "step: LoRA rows [%d, %d) outside the step", g[0],
                                 g[1]);
        if (g[2] != -1 && !tsr_engine_adapter_get(e, g[2]))
            return tsr_error_set(TSR_ERR_INVALID, "step: LoRA adapter slot %d is empty", g[2]);
    }
    for (int i = 0; i < s->n_tokens; i++) {
        if (s->tokens[i] < 0 || s->tokens[i] >= e->mcfg.n_vocab)
            return tsr_error_set(TSR_ERR_RANGE, "token id %d is outside the vocabulary (0..%d)",
                                 s->tokens[i], e->mcfg.n_vocab - 1);
        if (s->seq[i] < 0 || s->seq[i] >= kv->max_seqs)
            return tsr_error_set(TSR_ERR_INVALID, "step: sequence slot %d out of range", s->seq[i]);
        if (s->pos[i] < 0 || s->pos[i] >= kv->max_ctx)
            return tsr_error_set(TSR_ERR_RANGE, "position %d is beyond the context of %d",
                                 s->pos[i], kv->max_ctx);
    }
    if (s->n_tokens == 0)
        return TSR_OK;
    int32_t *seqs = malloc((size_t)s->n_tokens * 2 * sizeof *seqs);
    if (!seqs)
        return tsr_engine_oom((size_t)s->n_tokens * 2 * sizeof *seqs, "a step's sequence list");
    int32_t *npos = seqs + s->n_tokens;
    int n = step_seqs(s, seqs, npos), need = 0, freed = 0;
    for (int i = 0; i < s->n_release; i++)
        freed += kv->n_seq_blocks[s->release[i]];
    for (int k = 0; k < n; k++) {
        int released = 0;
        for (int i = 0; i < s->n_release; i++)
            released |= s->release[i] == seqs[k];
        int have = released ? 0 : kv->n_seq_blocks[seqs[k]];
        int want = npos[k] / kv->block_size + (npos[k] % kv->block_size != 0);
        if (want > have)
            need += want - have;
    }
    free(seqs);
    if (need > kv->n_free + freed)
        return tsr_error_set(TSR_ERR_RANGE, "KV cache full: the step needs %d blocks, %d are free",
                             need, kv->n_free + freed);
    return TSR_OK;
}

/* The step's LoRA segments clipped to the micro-batch [a, b), rebased, into
 * e->segs and bt. A step with segments always gives the model at least one
 * (an empty one), so rows outside every segment get no adapter. */
static tsr_status mb_segments(tsr_engine *e, const tsr_step *s, int a, int b, tsr_batch *bt) {
    if (s->n_seg == 0)
        return TSR_OK;
    TSR_TRY(tsr_engine_grow((void **)&e->segs, &e->segs_cap, (size_t)s->n_seg + 1, sizeof *e->segs,
                            "segs"));
    int n = 0;
    for (int k = 0; k < s->n_seg; k++) {
        const int32_t *g = s->seg + 3 * k;
        int lo = g[0] > a ? g[0] : a, hi = g[1] < b ? g[1] : b;
        if (lo >= hi)
            continue;
        const tsr_lora_adapter *ad = g[2] < 0 ? e->model.lora : tsr_engine_adapter_get(e, g[2]);
        e->segs[n++] = (tsr_lora_seg){lo - a, hi - a, ad};
    }
    if (n == 0)
        e->segs[n++] = (tsr_lora_seg){0, 0, NULL};
    bt->n_lora = n;
    bt->lora = e->segs;
    return TSR_OK;
}

/* Runs a decoded step on this rank. On world rank 0, results land in
 * tokens / logits, or in *to for TSR_OUT_TOPK. */
static tsr_status exec_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits,
                            const tsr_top_out *to) {
    tsr_comm_grid *g = e->grid;
    const int C = e->mcfg.n_embd, V = e->slice.n_vocab, n = s->n_tokens;
    for (int i = 0; i < s->n_release; i++)
        tsr_kv_cache_release(&e->kv, s->release[i]);
    if (n == 0)
        return TSR_OK; /* a release-only step */
    int32_t *seqs = malloc((size_t)n * 4 * sizeof *seqs);
    if (!seqs)
        return tsr_engine_oom((size_t)n * 4 * sizeof *seqs, "a step's sequences and rows");
    int32_t *npos = seqs + n, *mb_rows = seqs + 2 * n, *mb_outs = seqs + 3 * n;
    int ns = step_seqs(s, seqs, npos);
    tsr_status st = TSR_OK;
    for (int k = 0; k < ns && st == TSR_OK; k++)
        st = tsr_kv_cache_reserve(&e->kv, seqs[k], npos[k]);
    const size_t act = tsr_backend_act_size(e->be);
    if (st == TSR_OK && !e->first_stage)
        st = tsr_engine_grow_device(e->be, &e->hidden_in, &e->hidden_in_cap, (size_t)n * C * act,
                                    "hidden_in");
    if (st == TSR_OK && !e->last_stage)
        st = tsr_engine_grow_device(e->be, &e->hidden_out, &e->hidden_out_cap, (size_t)n * C * act,
                                    "hidden_out");
    /* greedy steps bring each row's best (value, column) from the device,
     * top-k steps its K best; the others the rows' logits */
    const int greedy = s->out == TSR_OUT_ARGMAX, topk = s->out == TSR_OUT_TOPK;
    const int draws = topk && s->draw;
    const int K = topk ? s->top_k : 1; /* picks per row from the device */
    const size_t per_row = greedy || topk ? (size_t)K : (size_t)V;
    const int last = e->last_stage && s->n_out > 0;
    if (st == TSR_OK && last && !greedy && !topk)
        st = tsr_engine_grow((void **)&e->logits, &e->logits_cap, (size_t)s->n_out * V,
                             sizeof(float), "logits");
    if (st == TSR_OK && last)
        st = tsr_engine_grow((void **)&e->mb_logits, &e->mb_logits_cap, (size_t)s->n_out * per_row,
                             sizeof(float), "mb_logits");
    if (st == TSR_OK && last && (greedy || topk)) {
        const size_t m = (size_t)s->n_out * K;
        st = tsr_engine_grow((void **)&e->best_val, &e->best_val_cap, m, sizeof(float), "best_val");
        if (st == TSR_OK)
            st = tsr_engine_grow((void **)&e->best_idx, &e->best_idx_cap, m, sizeof(int32_t),
                                 "best_idx");
        if (st == TSR_OK)
            st = tsr_engine_grow((void **)&e->mb_idx, &e->mb_idx_cap, m, sizeof(int32_t), "mb_idx");
    }
    if (st == TSR_OK && last && draws) {
        st = tsr_engine_grow((void **)&e->expsum, &e->expsum_cap, (size_t)s->n_out * 2,
                             sizeof(float), "expsum");
        if (st == TSR_OK)
            st = tsr_engine_grow((void **)&e->whole, &e->whole_cap, (size_t)s->n_out,
                                 sizeof(int32_t), "whole");
        for (int i = 0; st == TSR_OK && i < 2 * s->n_out; i++)
            e->expsum[i] = 0;
        e->n_whole = 0;
    }
    float *mb_logits = e->mb_logits;
    /* micro-batches: contiguous token ranges; each stage walks them in order,
     * so stage s works on micro-batch k while stage s+1 works on k-1 */
    int n_mb = g->pp > 1 ? e->cfg.micro_batches : 1;
    if (n_mb > n)
        n_mb = n;
    for (int mb = 0; mb < n_mb && st == TSR_OK; mb++) {
        int a = (int)((long)n * mb / n_mb), b = (int)((long)n * (mb + 1) / n_mb), m = b - a;
        int n_mo = 0;
        for (int i = 0; i < s->n_out; i++)
            if (s->out_rows[i] >= a && s->out_rows[i] < b) {
                mb_rows[n_mo] = s->out_rows[i] - a;
                mb_outs[n_mo++] = i;
            }
        if (!e->first_stage)
            st = tsr_engine_pp_recv(e, e->hidden_in, (size_t)m * C, g->pp_rank - 1, mb);
        if (st != TSR_OK)
            break;
        tsr_batch bt = {m, s->tokens + a, s->pos + a, s->seq + a, e->last_stage ? n_mo : 0, mb_rows,
                        0, NULL};
        st = mb_segments(e, s, a, b, &bt);
        if (st != TSR_OK)
            break;
        if (greedy)
            st = tsr_model_forward_greedy(
                &e->model, &e->kv, &bt, e->first_stage ? NULL : e->hidden_in,
                e->last_stage ? NULL : e->hidden_out, mb_logits, e->mb_idx);
        else if (topk)
            st = tsr_model_forward_topk(
                &e->model, &e->kv, &bt, e->first_stage ? NULL : e->hidden_in,
                e->last_stage ? NULL : e->hidden_out, K, mb_logits, e->mb_idx);
        else
            st = tsr_model_forward(&e->model, &e->kv, &bt, e->first_stage ? NULL : e->hidden_in,
                                   e->last_stage ? NULL : e->hidden_out, mb_logits);
        if (st == TSR_OK && !e->last_stage)
            st = tsr_engine_pp_send(e, e->hidden_out, (size_t)m * C, g->pp_rank + 1, mb);
        if (st != TSR_OK || !e->last_stage || n_mo == 0)
            continue;
        if (topk) { /* merged over TP now, while this micro-batch's logits are on the device */
            st = tsr_engine_merge_topk(e, n_mo, K, mb_outs);
            if (st == TSR_OK && draws)
                st = tsr_engine_draw_rows(e, s, n_mo, K, mb_outs);
            continue;
        }
        for (int i = 0; i < n_mo; i++) {
            if (greedy) {
                const int32_t c = e->mb_idx[i];
                e->best_val[mb_outs[i]] = mb_logits[i];
                e->best_idx[mb_outs[i]] = c < 0 ? -1 : e->slice.vocab_begin + c;
            } else {
                memcpy(e->logits + (size_t)mb_outs[i] * V, mb_logits + (size_t)i * V,
                       (size_t)V * sizeof(float));
            }
        }
    }
    free(seqs);
    TSR_TRY(st);
    if (s->out == TSR_OUT_NONE || s->n_out == 0)
        return TSR_OK;

    /* results: computed on the last stage, wanted on world rank 0 */
    const int src = (g->pp - 1) * g->tp; /* last stage, tp rank 0 */
    const int Vf = e->mcfg.n_vocab;
    const size_t count = greedy ? (size_t)s->n_out
                         : topk ? (size_t)s->n_out * K
                                : (size_t)s->n_out * Vf;
    if (g->world_rank == 0 && topk &&
        (!to || !to->ids || !to->val || (draws && (!to->expsum || !to->whole || !to->rows))))
        return tsr_error_set(TSR_ERR_INVALID, "step: no buffers for the top-k results");
    if (g->world_rank == 0 && ((greedy && !tokens) || (!greedy && !topk && !logits)))
        return tsr_error_set(TSR_ERR_INVALID, "step: no buffer for its results");
    if (e->last_stage && !greedy && !topk) { /* whole rows: every TP rank gathers them */
        float *lg = g->world_rank == 0 ? logits : malloc(count * sizeof *lg);
        if (!lg)
            return tsr_engine_oom(count * sizeof *lg, "the gathered logits");
        st = tsr_engine_collect_logits(e, e->logits, s->n_out, lg);
        if (st == TSR_OK && g->world_rank == src && src != 0)
            st = tsr_comm_send(g->world, lg, count, TSR_F32, 0, 1001);
        if (lg != logits)
            free(lg);
        return st;
    }
    if (e->last_stage) {
        if (greedy)
            TSR_TRY(tsr_engine_collect_argmax(e, s->n_out));
        if (g->world_rank == 0) { /* this rank is the last stage's tp rank 0 */
            if (greedy)
                memcpy(tokens, e->best_idx, count * sizeof *tokens);
            if (topk) {
                memcpy(to->ids, e->best_idx, count * sizeof(int32_t));
                memcpy(to->val, e->best_val, count * sizeof(float));
            }
            if (draws) {
                memcpy(to->expsum, e->expsum, (size_t)s->n_out * 2 * sizeof(float));
                tsr_engine_unpack_whole(e, s->n_out, to);
            }
            return TSR_OK;
        }
        if (g->world_rank != src)
            return TSR_OK;
        if (greedy || topk)
            TSR_TRY(tsr_comm_send(g->world, e->best_idx, count, TSR_COMM_I32, 0, 1000));
        if (topk)
            TSR_TRY(tsr_comm_send(g->world, e->best_val, count, TSR_F32, 0, 1001));
        if (draws) {
            TSR_TRY(tsr_comm_send(g->world, e->expsum, (size_t)s->n_out * 2, TSR_F32, 0, 1002));
            TSR_TRY(tsr_comm_send(g->world, e->whole, (size_t)s->n_out, TSR_COMM_I32, 0, 1003));
            if (e->n_whole > 0)
                TSR_TRY(tsr_comm_send(g->world, e->whole_rows, (size_t)e->n_whole * Vf, TSR_F32, 0,
                                      1004));
        }
        return TSR_OK;
    }
    if (g->world_rank == 0) {
        if (greedy)
            TSR_TRY(tsr_comm_recv(g->world, tokens, count, TSR_COMM_I32, src, 1000));
        if (topk) {
            TSR_TRY(tsr_comm_recv(g->world, to->ids, count, TSR_COMM_I32, src, 1000));
            TSR_TRY(tsr_comm_recv(g->world, to->val, count, TSR_F32, src, 1001));
        }
        if (!greedy && !topk)
            TSR_TRY(tsr_comm_recv(g->world, logits, count, TSR_F32, src, 1001));
        if (draws) {
            TSR_TRY(tsr_comm_recv(g->world, to->expsum, (size_t)s->n_out * 2, TSR_F32, src, 1002));
            TSR_TRY(tsr_engine_grow((void **)&e->whole, &e->whole_cap, (size_t)s->n_out,
                                    sizeof(int32_t), "whole"));
            TSR_TRY(tsr_comm_recv(g->world, e->whole, (size_t)s->n_out, TSR_COMM_I32, src, 1003));
            int nw = 0;
            for (int o = 0; o < s->n_out; o++)
                if (e->whole[o] >= 0)
                    nw++;
            /* the packing is the sender's: places 0..nw-1, each once */
            for (int o = 0; o < s->n_out; o++)
                if (e->whole[o] >= nw)
                    return tsr_error_set(TSR_ERR_COMM, "engine: corrupt whole-row list");
            if (nw > 0) {
                TSR_TRY(tsr_engine_grow((void **)&e->whole_rows, &e->whole_rows_cap,
                                        (size_t)nw * Vf, sizeof(float), "whole_rows"));
                TSR_TRY(
                    tsr_comm_recv(g->world, e->whole_rows, (size_t)nw * Vf, TSR_F32, src, 1004));
            }
            tsr_engine_unpack_whole(e, s->n_out, to);
        }
    }
    return TSR_OK;
}

/* ---- descriptor transport ---- */

static tsr_status send_desc(tsr_engine *e, uint32_t kind, const tsr_step *s) {
    desc_header h = {DESC_MAGIC, kind, 0, 0, 0, 0, 0, 0, 0};
    if (s) {
        h.n_tokens = s->n_tokens;
        h.n_out = s->n_out;
        h.out = (int32_t)s->out;
        h.n_release = s->n_release;
        h.n_seg = s->n_seg;
        h.top_k = s->top_k;
        h.has_draw = s->draw != NULL;
    }
    TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
    if (!s)
        return TSR_OK;
    const size_t nd = s->draw ? (size_t)s->n_out * sizeof(tsr_row_draw) / 4 : 0;
    size_t n =
        (size_t)s->n_tokens * 3 + (size_t)s->n_out + (size_t)s->n_release + 3 * (size_t)s->n_seg;
    TSR_TRY(tsr_engine_grow((void **)&e->desc, &e->desc_cap, (n + nd) * 4, 1, "desc"));
    int32_t *d = (int32_t *)e->desc;
    memcpy(d, s->tokens, (size_t)s->n_tokens * 4);
    memcpy(d + s->n_tokens, s->pos, (size_t)s->n_tokens * 4);
    memcpy(d + 2 * s->n_tokens, s->seq, (size_t)s->n_tokens * 4);
    if (s->n_out)
        memcpy(d + 3 * s->n_tokens, s->out_rows, (size_t)s->n_out * 4);
    if (s->n_release)
        memcpy(d + 3 * s->n_tokens + s->n_out, s->release, (size_t)s->n_release * 4);
    if (s->n_seg)
        memcpy(d + 3 * s->n_tokens + s->n_out + s->n_release, s->seg, (size_t)s->n_seg * 12);
    if (nd)
        memcpy(d + n, s->draw, nd * 4);
    return tsr_comm_broadcast(e->grid->world, d, n + nd, TSR_COMM_I32, 0);
}

tsr_status tsr_engine_send_kind(tsr_engine *e, uint32_t kind) {
    if (e->grid->world_size == 1)
        return TSR_OK;
    return send_desc(e, kind, NULL);
}

tsr_status tsr_engine_step(tsr_engine *e, const tsr_step *s, int32_t *tokens, float *logits) {
    if (e->grid->world_rank != 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "tsr_engine_step is for rank 0");
    if (s->out == TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID, "step: top-k results need tsr_engine_step_top");
    TSR_TRY(validate_step(e, s));
    if (e->grid->world_size > 1)
        TSR_TRY(send_desc(e, TSR_STEP_RUN, s));
    return exec_step(e, s, tokens, logits, NULL);
}

tsr_status tsr_engine_step_top(tsr_engine *e, const tsr_step *s, const tsr_top_out *out) {
    if (e->grid->world_rank != 0)
        return tsr_error_set(TSR_ERR_INTERNAL, "tsr_engine_step_top is for rank 0");
    if (s->out != TSR_OUT_TOPK)
        return tsr_error_set(TSR_ERR_INVALID,
                             "tsr_engine_step_top: the step's output is not top-k");
    TSR_TRY(validate_step(e, s));
    if (e->grid->world_size > 1)
        TSR_TRY(send_desc(e, TSR_STEP_RUN, s));
    return exec_step(e, s, NULL, NULL, out);
}

tsr_status tsr_engine_stop(tsr_engine *e) {
    if (e->grid->world_size == 1)
        return TSR_OK;
    return send_desc(e, TSR_STEP_STOP, NULL);
}

tsr_status tsr_engine_serve(tsr_engine *e) {
    for (;;) {
        desc_header h;
        TSR_TRY(tsr_comm_bcast_idle(e->grid->world, &h, sizeof h, 0));
        if (h.magic != DESC_MAGIC)
            return tsr_error_set(TSR_ERR_COMM, "engine: corrupt step descriptor");
        if (h.kind == TSR_STEP_STOP)
            return TSR_OK;
        if (h.kind == TSR_STEP_TRAIN) {
            TSR_TRY(tsr_engine_exec_train(e)); /* only errors that break the job */
            continue;
        }
        if (h.kind != TSR_STEP_RUN)
            return tsr_error_set(TSR_ERR_COMM, "engine: unknown descriptor kind %u", h.kind);
        if (h.n_tokens < 0 || h.n_out < 0 || h.n_release < 0 || h.n_seg < 0)
            return tsr_error_set(TSR_ERR_COMM, "engine: corrupt step descriptor");
        const size_t nd = h.has_draw ? (size_t)h.n_out * sizeof(tsr_row_draw) / 4 : 0;
        size_t n =
            (size_t)h.n_tokens * 3 + (size_t)h.n_out + (size_t)h.n_release + 3 * (size_t)h.n_seg;
        TSR_TRY(tsr_engine_grow((void **)&e->desc, &e->desc_cap, (n + nd) * 4, 1, "desc"));
        int32_t *d = (int32_t *)e->desc;
        TSR_TRY(tsr_comm_broadcast(e->grid->world, d, n + nd, TSR_COMM_I32, 0));
        if (nd) { /* into aligned memory: the doubles may sit at any 4-byte offset */
            TSR_TRY(tsr_engine_grow((void **)&e->draws, &e->draws_cap, (size_t)h.n_out,
                                    sizeof *e->draws, "draws"));
            memcpy(e->draws, d + n, nd * 4);
        }
        tsr_step s = {
            .n_tokens = h.n_tokens,
            .tokens = d,
            .pos = d + h.n_tokens,
            .seq = d + 2 * h.n_tokens,
            .n_out = h.n_out,
            .out_rows = d + 3 * h.n_tokens,
            .out = (tsr_out_kind)h.out,
            .n_release = h.n_release,
            .release = d + 3 * h.n_tokens + h.n_out,
            .n_seg = h.n_seg,
            .seg = d + 3 * h.n_tokens + h.n_out + h.n_release,
            .top_k = h.top_k,
            .draw = nd ? e->draws : NULL,
        };
        tsr_status st = exec_step(e, &s, NULL, NULL, NULL);
        if (st != TSR_OK)
            return st; /* the caller aborts the job: peers would wait forever */
    }
}

int tsr_engine_free_blocks(const tsr_engine *e) { return e->kv.n_free; }

/* ---- one sequence as a tsr_lm ---- */

static tsr_status lm_forward(void *ctx, const int32_t *tokens, int n, int pos0, float *all_logits,
                             float *last_logits, int32_t *last_token) {
    tsr_engine *e = ctx;
    int32_t *buf = malloc((size_t)n * 3 * sizeof *buf);
    if (!buf)
        return tsr_engine_oom((size_t)n * 3 * sizeof *buf, "a sequence's positions");
    int32_t *pos = buf, *seq = buf + n, *rows = buf + 2 * n;
    for (int i = 0; i < n; i++) {
        pos[i] = pos0 + i;
        seq[i] = 0;
        rows[i] = i;
    }
    int32_t slot0 = 0;
    tsr_step s = {
        .n_tokens = n,
        .tokens = tokens,
        .pos = pos,
        .seq = seq,
        .n_out = all_logits ? n : (last_logits || last_token ? 1 : 0),
        .out_rows = all_logits ? rows : rows + n - 1,
        .out = last_token ? TSR_OUT_ARGMAX
                          : (all_logits || last_logits ? TSR_OUT_LOGITS : TSR_OUT_NONE),
        .n_release = e->lm_release_pending,
        .release = &slot0,
    };
    tsr_status st = tsr_engine_step(e, &s, last_token, all_logits ? all_logits : last_logits);
    if (st == TSR_OK)
        e->lm_release_pending = 0;
    free(buf);
    return st;
}

static tsr_status lm_release(void *ctx) {
    tsr_engine *e = ctx;
    e->lm_release_pending = 1;
    return TSR_OK;
}

void tsr_engine_lm(tsr_engine *e, tsr_lm *out) {
    out->ctx = e;
    out->n_vocab = e->mcfg.n_vocab;
    out->n_ctx = e->kv.max_ctx;
    out->forward = lm_forward;
    out->release = lm_release;
}
