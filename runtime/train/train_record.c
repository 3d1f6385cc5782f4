/* runtime/train/train_record.c - the JSONL training file (runtime/train/train_record.h). */
#include "runtime/train/train_record.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "base/json_name.h"
/* root as a record: r's strings point into root; r->msgs is malloc'd
 * (*msgs, for the caller to free). */
static tsr_status parse_record(const json_t *root, const char *where, tsr_train_record *r,
                               tsr_train_msg **msgs_out) {
    memset(r, 0, sizeof *r);
    *msgs_out = NULL;
    if (!json_is_object(root))
        return tsr_error_set(TSR_ERR_FORMAT, "%s: expected a JSON object, got %s", where,
                             tsr_json_type_name(root));
    const json_t *msgs = json_object_get(root, "messages");
    const json_t *prompt = json_object_get(root, "prompt");
    const json_t *comp = json_object_get(root, "completion");
    if (msgs && (prompt || comp))
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: a record has either \"messages\" or \"prompt\"/\"completion\", "
                             "not both",
                             where);
    if (!msgs) {
        if (!prompt || !comp)
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: expected {\"prompt\": ..., \"completion\": ...} or "
                                 "{\"messages\": [...]}; missing \"%s\"",
                                 where,
                                 !prompt && !comp ? "messages"
                                 : !prompt        ? "prompt"
                                                  : "completion");
        if (!json_is_string(prompt) || !json_is_string(comp))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: \"%s\" must be a string, got %s", where,
                                 json_is_string(prompt) ? "completion" : "prompt",
                                 tsr_json_type_name(json_is_string(prompt) ? comp : prompt));
        r->prompt = json_string_value(prompt);
        r->completion = json_string_value(comp);
        return TSR_OK;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return tsr_error_set(TSR_ERR_FORMAT, "%s: \"messages\" must be a non-empty array, got %s",
                             where,
                             json_is_array(msgs) ? "an empty array" : tsr_json_type_name(msgs));
    const size_t n = json_array_size(msgs);
    tsr_train_msg *m = calloc(n, sizeof *m);
    if (!m)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    *msgs_out = m;
    int n_assistant = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *mi = json_array_get(msgs, i);
        const json_t *role = json_is_object(mi) ? json_object_get(mi, "role") : NULL;
        const json_t *content = json_is_object(mi) ? json_object_get(mi, "content") : NULL;
        if (!json_is_object(mi))
            return tsr_error_set(TSR_ERR_FORMAT, "%s: message %zu must be an object, got %s", where,
                                 i + 1, tsr_json_type_name(mi));
        if (!json_is_string(role) || !json_is_string(content))
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: message %zu needs string \"role\" and \"content\"", where,
                                 i + 1);
        const char *rs = json_string_value(role);
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return tsr_error_set(TSR_ERR_FORMAT,
                                 "%s: message %zu has role \"%.32s\" (want system, user or "
                                 "assistant)",
                                 where, i + 1, rs);
        m[i].role = rs;
        m[i].content = json_string_value(content);
        n_assistant += !strcmp(rs, "assistant");
    }
    if (!n_assistant)
        return tsr_error_set(TSR_ERR_FORMAT,
                             "%s: the conversation has no assistant message (nothing to learn)",
                             where);
    r->chat = 1;
    r->msgs = m;
    r->n_msgs = n;
    return TSR_OK;
}

tsr_status tsr_train_jsonl_read(const char *path, tsr_train_record_fn fn, void *ctx) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "cannot open the data file '%s': %s", path,
                             strerror(errno));
    char *line = NULL;
    size_t line_cap = 0, n_records = 0;
    ssize_t len;
    int lineno = 0;
    tsr_status st = TSR_OK;
    char where[4200];
    while (st == TSR_OK && (len = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        size_t i = 0;
        while (i < (size_t)len && strchr(" \t\r\n", line[i]))
            i++;
        if (i == (size_t)len)
            continue; /* blank */
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        json_error_t je;
        json_t *root = json_loadb(line, (size_t)len, 0, &je);
        if (!root) {
            st = tsr_error_set(TSR_ERR_FORMAT, "%s: not valid JSON: %s (column %d)", where, je.text,
                               je.column);
            break;
        }
        tsr_train_record r;
        tsr_train_msg *msgs;
        st = parse_record(root, where, &r, &msgs);
        if (st == TSR_OK)
            st = fn(ctx, &r, where, lineno);
        free(msgs);
        json_decref(root);
        n_records++;
    }
    if (st == TSR_OK && ferror(f))
        st = tsr_error_set(TSR_ERR_IO, "cannot read the data file '%s': %s", path, strerror(errno));
    fclose(f);
    free(line);
    if (st == TSR_OK && n_records == 0)
        st = tsr_error_set(TSR_ERR_INVALID,
                           "the data file '%s' holds no example (one JSON object per line)", path);
    return st;
}
