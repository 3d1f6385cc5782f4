/* runtime/engine/engine_results.c - the last stage's output of a step turned
 * into the step's results: greedy picks reduced over the TP group, each TP
 * rank's top-k lists merged, whole logits rows gathered, and for rows drawn
 * with sampling the softmax normalisers and the rows the candidates cannot
 * decide. Called by exec_step (engine.c) on the last stage. Not here: the
 * sampling itself (runtime/sample/), moving results to rank 0 (engine.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/engine/engine_internal.h"
#include "runtime/sample/sampler.h"

/* Greedy: each row's best over this rank's vocabulary slice was picked on
 * the device during the forward (best_val, best_idx as global ids); the
 * max-with-index all-reduce over the TP group picks among the slices. The
 * logits never leave the device. The picks stay in best_idx. */
tsr_status tsr_engine_collect_argmax(tsr_engine *e, int n_out) {
    if (e->grid->tp > 1)
        TSR_TRY(
            tsr_comm_allreduce_argmax(e->grid->tp_group, e->best_val, e->best_idx, (size_t)n_out));
    return TSR_OK;
}

/* Top-k, per micro-batch: rows 0..n of the micro-batch have this rank's k
 * best in e->mb_logits / e->mb_idx (columns of the slice); with TP the
 * ranks' lists are gathered and merged into each row's k best of the
 * vocabulary in the same order, into e->best_val / e->best_idx at the
 * step's output index outs[i]. Every TP rank merges (they all take part in
 * what follows for the same rows). */
tsr_status tsr_engine_merge_topk(tsr_engine *e, int n, int k, const int32_t *outs) {
    const int tp = e->grid->tp;
    const size_t per = (size_t)n * k;
    for (size_t j = 0; j < per; j++)
        e->mb_idx[j] = e->mb_idx[j] < 0 ? -1 : e->slice.vocab_begin + e->mb_idx[j];
    if (tp == 1) {
        for (int i = 0; i < n; i++) {
            memcpy(e->best_val + (size_t)outs[i] * k, e->mb_logits + (size_t)i * k,
                   (size_t)k * sizeof(float));
            memcpy(e->best_idx + (size_t)outs[i] * k, e->mb_idx + (size_t)i * k,
                   (size_t)k * sizeof(int32_t));
        }
        return TSR_OK;
    }
    TSR_TRY(tsr_engine_grow((void **)&e->topk_all, &e->topk_all_cap, per * tp, sizeof(float),
                            "topk_all"));
    TSR_TRY(tsr_engine_grow((void **)&e->topk_all_idx, &e->topk_all_idx_cap, per * tp,
                            sizeof(int32_t), "topk_all_idx"));
    TSR_TRY(tsr_comm_allgather(e->grid->tp_group, e->mb_logits, e->topk_all, per, TSR_F32));
    TSR_TRY(tsr_comm_allgather(e->grid->tp_group, e->mb_idx, e->topk_all_idx, per, TSR_COMM_I32));
    int *head = malloc((size_t)tp * sizeof *head);
    if (!head)
        return tsr_engine_oom((size_t)tp * sizeof *head, "the top-k merge heads");
    for (int i = 0; i < n; i++) {
        float *val = e->best_val + (size_t)outs[i] * k;
        int32_t *ids = e->best_idx + (size_t)outs[i] * k;
        for (int r = 0; r < tp; r++)
            head[r] = 0;
        for (int j = 0; j < k; j++) { /* a k-way merge of sorted lists */
            int best = -1;
            float bv = -INFINITY;
            int32_t bi = -1;
            for (int r = 0; r < tp; r++) {
                if (head[r] >= k)
                    continue;
                const size_t at = (size_t)r * per + (size_t)i * k + head[r];
                const float v = e->topk_all[at];
                const int32_t id = e->topk_all_idx[at];
                if (id < 0)
                    continue; /* that list ran out */
                if (best < 0 || tsr_topk_before(v, id, bv, bi)) {
                    best = r;
                    bv = v;
                    bi = id;
                }
            }
            if (best >= 0)
                head[best]++;
            val[j] = best >= 0 ? bv : -INFINITY;
            ids[j] = bi;
        }
    }
    free(head);
    return TSR_OK;
}

/* Full logits: every TP rank's slice of rows part (n, slice) gathered
 * (padded to the widest slice) into out (n, n_vocab). */
tsr_status tsr_engine_collect_logits(tsr_engine *e, const float *part, int n, float *out) {
    const int tp = e->grid->tp, V = e->mcfg.n_vocab;
    if (tp == 1) {
        memcpy(out, part, (size_t)n * V * sizeof *out);
        return TSR_OK;
    }
    int width = 0;
    for (int r = 0; r < tp; r++) {
        tsr_model_slice sl;
        TSR_TRY(tsr_shard_plan_slice(&e->plan, r, e->grid->pp_rank, &sl));
        if (sl.n_vocab > width)
            width = sl.n_vocab;
    }
    size_t per = (size_t)n * width;
    TSR_TRY(tsr_engine_grow((void **)&e->gathered, &e->gathered_cap, per * tp, sizeof(float),
                            "gathered"));
    float *send = malloc(per * sizeof *send);
    if (!send)
        return tsr_engine_oom(per * sizeof *send, "the logits to gather");
    for (int i = 0; i < n; i++) {
        memcpy(send + (size_t)i * width, part + (size_t)i * e->slice.n_vocab,
               (size_t)e->slice.n_vocab * sizeof *send);
        for (int j = e->slice.n_vocab; j < width; j++)
            send[(size_t)i * width + j] = -INFINITY;
    }
    tsr_status st = tsr_comm_allgather(e->grid->tp_group, send, e->gathered, per, TSR_F32);
    free(send);
    TSR_TRY(st);
    for (int r = 0; r < tp; r++) {
        tsr_model_slice sl;
        TSR_TRY(tsr_shard_plan_slice(&e->plan, r, e->grid->pp_rank, &sl));
        for (int i = 0; i < n; i++)
            memcpy(out + (size_t)i * V + sl.vocab_begin,
                   e->gathered + (size_t)r * per + (size_t)i * width,
                   (size_t)sl.n_vocab * sizeof *out);
    }
    return TSR_OK;
}

/* A top-k step with draws, per micro-batch on the last stage, after
 * tsr_engine_merge_topk while the micro-batch's logits are still on the device: the
 * TSR_DRAW_ROW_TOP rows' normalisers (each slice's (max, sum) gathered over
 * TP and combined in rank order, so every TP rank gets the same floats),
 * then which rows go whole (TSR_DRAW_WHOLE, and ROW_TOP rows whose
 * candidates cannot decide the draw rank 0 will make), and those rows'
 * logits gathered into e->whole_rows. n rows; outs[i] their output index. */
tsr_status tsr_engine_draw_rows(tsr_engine *e, const tsr_step *s, int n, int K,
                                const int32_t *outs) {
    const int tp = e->grid->tp, V = e->mcfg.n_vocab;
    int n_rt = 0;
    for (int i = 0; i < n; i++)
        n_rt += s->draw[outs[i]].mode == TSR_DRAW_ROW_TOP;
    if (n_rt > 0) {
        TSR_TRY(
            tsr_engine_grow((void **)&e->inv_t, &e->inv_t_cap, (size_t)n, sizeof(float), "inv_t"));
        TSR_TRY(tsr_engine_grow((void **)&e->mb_expsum, &e->mb_expsum_cap, (size_t)n * 2 * (tp + 1),
                                sizeof(float), "mb_expsum"));
        for (int i = 0; i < n; i++) {
            const tsr_row_draw *d = &s->draw[outs[i]];
            e->inv_t[i] = d->mode == TSR_DRAW_ROW_TOP ? 1.0f / d->temperature : 1.0f;
        }
        float *mine = e->mb_expsum, *all = e->mb_expsum + (size_t)n * 2;
        TSR_TRY(tsr_model_row_expsum(&e->model, e->inv_t, mine));
        if (tp > 1)
            TSR_TRY(tsr_comm_allgather(e->grid->tp_group, mine, all, (size_t)n * 2, TSR_F32));
        else
            all = mine;
        for (int i = 0; i < n; i++) {
            double mx = -INFINITY, z = 0;
            int bad = 0;
            for (int r = 0; r < tp; r++) {
                const float m = all[(size_t)r * n * 2 + 2 * i];
                if (m > mx)
                    mx = m;
                bad |= isnan(m);
            }
            for (int r = 0; r < tp && !bad; r++) {
                const float m = all[(size_t)r * n * 2 + 2 * i],
                            zr = all[(size_t)r * n * 2 + 2 * i + 1];
                if (m == -INFINITY)
                    continue; /* a slice with nothing finite adds nothing */
                bad |= isnan(zr);
                z += (double)zr * exp(((double)m - mx) * e->inv_t[i]);
            }
            e->expsum[2 * (size_t)outs[i]] = (float)mx;
            e->expsum[2 * (size_t)outs[i] + 1] = bad || !isfinite(mx) ? NAN : (float)z;
        }
    }
    int32_t *rows = malloc((size_t)n * sizeof *rows);
    if (!rows)
        return tsr_engine_oom((size_t)n * sizeof *rows, "the rows the candidates cannot decide");
    int nw = 0;
    for (int i = 0; i < n; i++) {
        const int o = outs[i];
        const tsr_row_draw *d = &s->draw[o];
        int whole = d->mode == TSR_DRAW_WHOLE;
        if (d->mode == TSR_DRAW_ROW_TOP) {
            const float *val = e->best_val + (size_t)o * K;
            const int32_t *ids = e->best_idx + (size_t)o * K;
            int m = 0;
            while (m < K && ids[m] >= 0)
                m++;
            whole = m == 0 || !(val[0] > -INFINITY) || isnan(val[0]) ||
                    tsr_sampler_pick_sorted(val, m, m < K, e->expsum[2 * (size_t)o],
                                            e->expsum[2 * (size_t)o + 1], d->temperature, d->top_p,
                                            d->min_p, d->u) < 0;
        }
        e->whole[o] = -1;
        if (whole) {
            e->whole[o] = e->n_whole + nw;
            rows[nw++] = i;
        }
    }
    tsr_status st = TSR_OK;
    if (nw > 0) {
        const size_t part = (size_t)nw * e->slice.n_vocab;
        st = tsr_engine_grow((void **)&e->logits, &e->logits_cap, part, sizeof(float), "logits");
        if (st == TSR_OK)
            st = tsr_engine_grow((void **)&e->whole_rows, &e->whole_rows_cap,
                                 (size_t)(e->n_whole + nw) * V, sizeof(float), "whole_rows");
        if (st == TSR_OK)
            st = tsr_model_logits_rows(&e->model, rows, nw, e->logits);
        if (st == TSR_OK)
            st =
                tsr_engine_collect_logits(e, e->logits, nw, e->whole_rows + (size_t)e->n_whole * V);
        if (st == TSR_OK)
            e->n_whole += nw;
    }
    free(rows);
    return st;
}

/* Rank 0's results of a TOPK step that has a whole row for each output
 * index where e->whole says so (packed in e->whole_rows): into out. */
void tsr_engine_unpack_whole(const tsr_engine *e, int n_out, const tsr_top_out *out) {
    const int V = e->mcfg.n_vocab;
    for (int o = 0; o < n_out; o++) {
        out->whole[o] = e->whole[o] >= 0;
        if (e->whole[o] >= 0)
            memcpy(out->rows + (size_t)o * V, e->whole_rows + (size_t)e->whole[o] * V,
                   (size_t)V * sizeof(float));
    }
}
