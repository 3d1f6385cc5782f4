/* runtime/server/request.c - request lifetime, event lists and the bounded
 * admission queue. */
#include "runtime/server/request.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

tsr_gen_request *tsr_gen_request_new(void) {
    tsr_gen_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->cancelled, 0);
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void tsr_gen_request_retain(tsr_gen_request *r) { atomic_fetch_add(&r->refs, 1); }

void tsr_gen_event_free(tsr_gen_event *ev) {
    if (!ev)
        return;
    free(ev->tokens);
    free(ev->logprobs);
    free(ev->top);
    free(ev->text);
    free(ev);
}

void tsr_gen_request_release(tsr_gen_request *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    for (tsr_gen_event *e = r->head, *n; e; e = n) {
        n = e->next;
        tsr_gen_event_free(e);
    }
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->prompt);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void tsr_gen_request_post(tsr_gen_request *r, tsr_gen_event *ev) {
    ev->next = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->tail)
        r->tail->next = ev;
    else
        r->head = ev;
    r->tail = ev;
    if (ev->kind == TSR_EV_FINAL)
        r->final_posted = 1;
    pthread_mutex_unlock(&r->mu);
}

tsr_gen_event *tsr_gen_request_take(tsr_gen_request *r) {
    pthread_mutex_lock(&r->mu);
    tsr_gen_event *ev = r->head;
    if (ev) {
        r->head = ev->next;
        if (!r->head)
            r->tail = NULL;
        ev->next = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    return ev;
}

tsr_status tsr_request_queue_init(tsr_request_queue *q, int capacity) {
    memset(q, 0, sizeof *q);
    if (capacity <= 0)
        return tsr_error_set(TSR_ERR_INVALID, "request queue: capacity %d", capacity);
    q->items = calloc((size_t)capacity, sizeof *q->items);
    if (!q->items)
        return tsr_error_set(TSR_ERR_NOMEM, "request queue: out of memory");
    q->cap = capacity;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    return TSR_OK;
}

tsr_ctl_request *tsr_ctl_request_new(void) {
    tsr_ctl_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->cancelled, 0);
    atomic_init(&r->refs, 1);
    atomic_init(&r->done, 0);
    return r;
}

void tsr_ctl_request_retain(tsr_ctl_request *r) { atomic_fetch_add(&r->refs, 1); }

void tsr_ctl_request_release(tsr_ctl_request *r) {
    if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    free(r->seq_start);
    free(r->tokens);
    free(r->weights);
    free(r->list);
    free(r->config_json);
    free(r->safetensors);
    free(r);
}

void tsr_ctl_request_finish(tsr_ctl_request *r, int code, const char *fmt, ...) {
    r->code = code;
    r->msg[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof r->msg, fmt, ap);
        va_end(ap);
    }
    atomic_store(&r->done, 1); /* seq_cst: the fields above are visible first */
}

tsr_status tsr_request_queue_push_ctl(tsr_request_queue *q, tsr_ctl_request *r) {
    pthread_mutex_lock(&q->mu);
    tsr_status st = TSR_OK;
    if (q->closed) {
        st = tsr_error_set(TSR_ERR_UNAVAILABLE, "the server is shutting down");
    } else {
        tsr_ctl_request_retain(r);
        r->next = NULL;
        if (q->ctl_tail)
            q->ctl_tail->next = r;
        else
            q->ctl_head = r;
        q->ctl_tail = r;
        q->n_ctl++;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

tsr_ctl_request *tsr_request_queue_pop_ctl(tsr_request_queue *q) {
    pthread_mutex_lock(&q->mu);
    tsr_ctl_request *r = q->ctl_head;
    if (r) {
        q->ctl_head = r->next;
        if (!q->ctl_head)
            q->ctl_tail = NULL;
        r->next = NULL;
        q->n_ctl--;
    }
    pthread_mutex_unlock(&q->mu);
    return r;
}

void tsr_request_queue_free(tsr_request_queue *q) {
    if (!q || !q->items)
        return;
    for (int i = 0; i < q->count; i++)
        tsr_gen_request_release(q->items[(q->head + i) % q->cap]);
    for (tsr_ctl_request *r = q->ctl_head, *n; r; r = n) {
        n = r->next;
        tsr_ctl_request_finish(r, 14 /* UNAVAILABLE */, "the server shut down");
        tsr_ctl_request_release(r);
    }
    free(q->items);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    memset(q, 0, sizeof *q);
}

tsr_status tsr_request_queue_push(tsr_request_queue *q, tsr_gen_request *r) {
    pthread_mutex_lock(&q->mu);
    tsr_status st = TSR_OK;
    if (q->closed) {
        st = tsr_error_set(TSR_ERR_UNAVAILABLE, "the server is shutting down");
    } else if (q->count == q->cap) {
        st = tsr_error_set(TSR_ERR_RANGE, "the request queue is full (%d waiting); retry later",
                           q->cap);
    } else {
        tsr_gen_request_retain(r);
        q->items[(q->head + q->count++) % q->cap] = r;
        pthread_cond_signal(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

int tsr_request_queue_pop(tsr_request_queue *q, tsr_gen_request **out, int max, double timeout_s) {
    pthread_mutex_lock(&q->mu);
    if (q->count == 0 && q->n_ctl == 0 && timeout_s > 0 && !q->closed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (q->count == 0 && q->n_ctl == 0 && !q->closed)
            if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT)
                break;
    }
    int n = 0;
    while (n < max && q->count > 0) {
        out[n++] = q->items[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    pthread_mutex_unlock(&q->mu);
    return n;
}

int tsr_request_queue_take_cancelled(tsr_request_queue *q, tsr_gen_request **out, int max,
                                     double now) {
    pthread_mutex_lock(&q->mu);
    int n = 0, kept = 0;
    for (int i = 0; i < q->count; i++) {
        tsr_gen_request *r = q->items[(q->head + i) % q->cap];
        if (n < max && (atomic_load(&r->cancelled) || (r->deadline > 0 && now > r->deadline)))
            out[n++] = r;
        else
            q->items[(q->head + kept++) % q->cap] = r;
    }
    q->count = kept;
    pthread_mutex_unlock(&q->mu);
    return n;
}

int tsr_request_queue_len(tsr_request_queue *q) {
    pthread_mutex_lock(&q->mu);
    int n = q->count;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void tsr_request_queue_close(tsr_request_queue *q) {
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}
