/* runtime/engine/session.c - model, tokenizer, engine and inference
 * adapter of one `tessera` command, opened together on a grid (see
 * session.h). */
#include "runtime/engine/session.h"

#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "shard/peft.h"

/* PEFT's target order is TSR_LORA_*'s: the bit masks are the same. */
static tsr_status load_tokenizer(tsr_session *s) {
    const tsr_gguf_t *g = tsr_model_file_gguf(s->mf);
    if (g)
        return tsr_tokenizer_from_gguf(g, &s->tok);
    char tj[4200], tc[4200];
    const char *dir = tsr_model_file_dir(s->mf);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    snprintf(tc, sizeof tc, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(tc, "r");
    if (f)
        fclose(f);
    return tsr_tokenizer_from_json(tj, f ? tc : NULL, &s->tok);
}

tsr_status tsr_session_open(tsr_session *s, tsr_comm_grid *grid, const char *model) {
    memset(s, 0, sizeof *s);
    s->grid = grid;
    s->model = model;
    s->t_open = tsr_now_s();
    tsr_status st = tsr_model_file_open(model, &s->mf);
    if (st == TSR_OK && grid->world_rank == 0)
        st = load_tokenizer(s);
    tsr_status all = tsr_comm_agree(grid->world, st);
    if (st != TSR_OK)
        return st;
    if (all != TSR_OK) {
        s->peer_failed = 1;
        return tsr_error_set(all, "another rank could not open the model (see its message)");
    }
    return TSR_OK;
}

tsr_status tsr_session_load_adapter(tsr_session *s, const char *dir) {
    const tsr_model_config *mc = &s->engine.mcfg;
    tsr_peft_adapter pa = {0};
    tsr_status st = tsr_peft_load(dir, mc, &pa);
    if (st != TSR_OK)
        return tsr_error_wrap(st, "--adapter");
    tsr_lora_config lc = TSR_LORA_CONFIG_INIT;
    lc.rank = pa.r;
    lc.alpha = pa.alpha;
    lc.use_rslora = pa.use_rslora;
    lc.targets = pa.targets;
    lc.dropout = 0.0f; /* inference: no dropout */
    tsr_lora_shard shard;
    st = tsr_lora_shard_of(&s->engine.plan, s->grid->tp_rank, s->grid->pp_rank, &shard);
    if (st == TSR_OK) {
        st = tsr_lora_adapter_init_frozen(&s->lora, &lc, mc, &shard, s->engine.be);
        if (st != TSR_OK)
            st = tsr_error_wrap(st, "--adapter");
    }
    s->lora_ready = st == TSR_OK;
    for (int l = shard.slice.layer_begin; st == TSR_OK && l < shard.slice.layer_end; l++)
        for (int t = 0; st == TSR_OK && t < TSR_LORA_N_TARGETS; t++)
            st = tsr_lora_set_full(&s->lora, l, (tsr_lora_target)t, pa.A[TSR_PEFT_IDX(l, t)],
                                   pa.B[TSR_PEFT_IDX(l, t)]);
    tsr_peft_free(&pa);
    if (st == TSR_OK)
        st = tsr_backend_sync(s->engine.be);
    if (st == TSR_OK)
        st = tsr_model_set_lora(&s->engine.model, &s->lora);
    if (st == TSR_OK)
        TSR_LOG_I("adapter %s: r %d, scale %g, targets 0x%x", dir, s->lora.cfg.rank,
                  (double)s->lora.scale, s->lora.cfg.targets);
    return st;
}

void tsr_session_drop_adapter(tsr_session *s) {
    if (!s->lora_ready)
        return;
    if (s->engine.model_loaded)
        tsr_model_set_lora(&s->engine.model, NULL);
    tsr_lora_adapter_free(&s->lora);
    s->lora_ready = 0;
}

void tsr_session_free_engine(tsr_session *s) {
    s->engine_ready = 0;
    tsr_session_drop_adapter(s);
    tsr_engine_free(&s->engine);
}

tsr_status tsr_session_start_engine(tsr_session *s, const tsr_plan_config *pc,
                                    const tsr_engine_config *ec_in, const char *adapter) {
    tsr_engine_config ec = *ec_in;
    const tsr_model_config *c = tsr_model_file_config(s->mf);
    if (ec.max_ctx < 0)
        ec.max_ctx = c->n_ctx_train < 4096 ? c->n_ctx_train : 4096;
    /* The layout check is the same on every rank: one message, from rank 0. */
    tsr_shard_plan plan;
    tsr_status st = tsr_shard_plan_init(c, pc, &plan);
    if (st != TSR_OK) {
        s->peer_failed = 1;
        return st;
    }
    tsr_shard_plan_free(&plan);
    st = tsr_engine_init(&s->engine, s->grid, s->mf, pc, &ec);
    if (st != TSR_OK) {
        s->peer_failed = strstr(tsr_error_msg(), "another rank failed") != NULL;
        return st;
    }
    s->engine_ready = 1;
    if (adapter) {
        /* every rank loads its pieces; all learn whether all could. On a
         * failure no step was ever broadcast: the engine is freed without
         * the stop message (which the peers would never read). */
        st = tsr_session_load_adapter(s, adapter);
        tsr_status all = tsr_comm_agree(s->grid->world, st);
        if (all != TSR_OK) {
            tsr_session_free_engine(s);
            if (st != TSR_OK)
                return st;
            s->peer_failed = 1;
            return tsr_error_set(all, "another rank could not load the adapter (see its message)");
        }
    }
    tsr_engine_lm(&s->engine, &s->lm);
    const tsr_model_slice *sl = &s->engine.slice;
    TSR_LOG_I("loaded %s (%s, %d layers, %d heads / %d KV heads, vocab %d) in %.2f s; this rank: "
              "layers %d-%d, heads %d+%d, KV heads %d+%d, FFN %d+%d, vocab %d+%d",
              s->model, tsr_model_file_format(s->mf), c->n_layer, c->n_head, c->n_head_kv,
              c->n_vocab, tsr_now_s() - s->t_open, sl->layer_begin, sl->layer_end - 1,
              sl->head_begin, sl->n_head, sl->kv_head_begin, sl->n_kv_head, sl->ff_begin, sl->n_ff,
              sl->vocab_begin, sl->n_vocab);
    return TSR_OK;
}

void tsr_session_free(tsr_session *s) {
    if (!s)
        return;
    if (s->engine_ready) {
        if (s->grid->world_rank == 0)
            tsr_engine_stop(&s->engine);
        tsr_session_free_engine(s);
    }
    tsr_session_drop_adapter(s);
    tsr_tokenizer_free(s->tok);
    s->tok = NULL;
    tsr_model_file_close(s->mf);
    s->mf = NULL;
}
