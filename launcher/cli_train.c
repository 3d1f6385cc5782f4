/* launcher/cli_train.c - data file, shuffle, output directory and loss.csv
 * of `tessera-cli train` (see cli_train.h). The data file is read by
 * runtime/train/train_record.c, as `tessera train` reads it; the shuffle and the
 * directory check follow runtime/cmd/tessera_main.c, and the atomic save
 * shard/peft.c, so the client and `tessera train` agree on what a data
 * file and an --out may be. */
#include "launcher/cli_train.h"
#include "base/rng.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/train/train_record.h"

/* ---- the data file ---------------------------------------------------------- */

static void example_free(tsr_cli_train_example *e) {
    if (e->msg.input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION) {
        free(e->pc.prompt);
        free(e->pc.completion);
    }
    for (size_t i = 0; e->msgs && i < e->chat.n_messages; i++) {
        free(e->msgs[i].role);
        free(e->msgs[i].content);
    }
    free(e->msgs);
    free(e->msg_ptrs);
    memset(e, 0, sizeof *e);
}

/* Builds *e from one record (copies of its strings). */
static tsr_status build_example(tsr_cli_train_example *e, const tsr_train_record *r) {
    memset(e, 0, sizeof *e);
    tessera__v1__train_example__init(&e->msg);
    tessera__v1__prompt_completion__init(&e->pc);
    tessera__v1__chat_input__init(&e->chat);
    if (!r->chat) {
        e->msg.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION;
        e->pc.prompt = strdup(r->prompt);
        e->pc.completion = strdup(r->completion);
        return e->pc.prompt && e->pc.completion ? TSR_OK
                                                : tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    const size_t n = r->n_msgs;
    e->msg.input_case = TESSERA__V1__TRAIN_EXAMPLE__INPUT_CHAT;
    e->msgs = calloc(n, sizeof *e->msgs);
    e->msg_ptrs = calloc(n, sizeof *e->msg_ptrs);
    if (!e->msgs || !e->msg_ptrs)
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    e->chat.messages = e->msg_ptrs;
    for (size_t i = 0; i < n; i++) {
        tessera__v1__chat_message__init(&e->msgs[i]);
        e->msg_ptrs[i] = &e->msgs[i];
        e->chat.n_messages = i + 1; /* what example_free frees */
        e->msgs[i].role = strdup(r->msgs[i].role);
        e->msgs[i].content = strdup(r->msgs[i].content);
        if (!e->msgs[i].role || !e->msgs[i].content)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    return TSR_OK;
}

/* One record of the file, appended to the tsr_cli_train_data at ctx. */
static tsr_status load_record(void *ctx, const tsr_train_record *r, const char *where, int line) {
    tsr_cli_train_data *d = ctx;
    if (d->n >= (size_t)INT_MAX / 2)
        return tsr_error_set(TSR_ERR_RANGE, "%s: too many examples", where);
    if ((d->n & (d->n - 1)) == 0) { /* 0, 1, 2, 4, ...: grow to the next power of two */
        tsr_cli_train_example *g = realloc(d->ex, (d->n ? 2 * d->n : 1) * sizeof *g);
        if (!g)
            return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
        d->ex = g;
    }
    tsr_cli_train_example *e = &d->ex[d->n];
    tsr_status st = build_example(e, r);
    if (st != TSR_OK) {
        example_free(e);
        return st;
    }
    e->line = line;
    d->n++;
    return TSR_OK;
}

tsr_status tsr_cli_train_data_load(const char *path, tsr_cli_train_data *d) {
    memset(d, 0, sizeof *d);
    tsr_status st = tsr_train_jsonl_read(path, load_record, d);
    if (st != TSR_OK) {
        tsr_cli_train_data_free(d);
        return st;
    }
    /* the examples do not move from here on: point their messages home */
    for (size_t k = 0; k < d->n; k++) {
        tsr_cli_train_example *e = &d->ex[k];
        if (e->msg.input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION)
            e->msg.prompt_completion = &e->pc;
        else
            e->msg.chat = &e->chat;
    }
    return TSR_OK;
}

void tsr_cli_train_data_free(tsr_cli_train_data *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
}

/* ---- order of the examples ---------------------------------------------------- */

void tsr_cli_train_shuffle(int *perm, int n, uint64_t seed, int epoch) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(tsr_splitmix64(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int tsr_cli_train_total_steps(int n_examples, int batch, int steps, int epochs) {
    if (n_examples < 1 || batch < 1)
        return 0;
    if (steps > 0)
        return steps;
    long long per_epoch = (n_examples + (long long)batch - 1) / batch;
    long long total = per_epoch * (epochs > 0 ? epochs : 1);
    return total > INT_MAX ? 0 : (int)total;
}

void tsr_cli_train_step_batch(int k, int n_examples, int batch, int *epoch, int *first,
                              int *count) {
    int per_epoch = (int)((n_examples + (long long)batch - 1) / batch);
    *epoch = k / per_epoch;
    *first = (k % per_epoch) * batch;
    *count = n_examples - *first < batch ? n_examples - *first : batch;
}

/* ---- the output directory ----------------------------------------------------- */

/* path without its trailing slashes, in buf (size cap). -1 if it is too long. */
static int strip_slashes(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    if (n >= cap)
        return -1;
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    return 0;
}

static void parent_of(const char *dir, char *parent, size_t cap) {
    snprintf(parent, cap, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, cap, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
}

tsr_status tsr_cli_train_check_out_dir(const char *dir_arg, int *exists) {
    char dir[PATH_MAX], parent[PATH_MAX];
    *exists = 0;
    if (!dir_arg[0] || strip_slashes(dir_arg, dir, sizeof dir) != 0)
        return tsr_error_set(TSR_ERR_INVALID, "--out: bad path '%s'", dir_arg);
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    if (!strcmp(dir, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--out %s cannot be an adapter directory (name a new one)", dir_arg);
    parent_of(dir, parent, sizeof parent);
    struct stat ps;
    if (stat(parent, &ps) != 0)
        return tsr_error_set(TSR_ERR_IO, "--out %s: '%s': %s", dir_arg, parent, strerror(errno));
    if (!S_ISDIR(ps.st_mode))
        return tsr_error_set(TSR_ERR_INVALID, "--out %s: '%s' is not a directory", dir_arg,
                             parent);
    if (access(parent, W_OK | X_OK) != 0)
        return tsr_error_set(TSR_ERR_IO, "--out %s: cannot write in '%s': %s", dir_arg, parent,
                             strerror(errno));
    struct stat sb;
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return TSR_OK;
        return tsr_error_set(TSR_ERR_IO, "--out %s: %s", dir_arg, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--out %s exists and is not a directory (it would not be replaced)",
                             dir_arg);
    DIR *dp = opendir(dir);
    if (!dp)
        return tsr_error_set(TSR_ERR_IO, "--out %s: %s", dir_arg, strerror(errno));
    int entries = 0, has_config = 0, other = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        entries++;
        struct stat es;
        if (fstatat(dirfd(dp), e->d_name, &es, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(es.st_mode))
            other = 1;
        if (!strcmp(e->d_name, "adapter_config.json"))
            has_config = 1;
    }
    closedir(dp);
    if (other || (entries && !has_config))
        return tsr_error_set(TSR_ERR_INVALID,
                             "--out %s exists and is not an adapter directory (it is replaced "
                             "only when empty or holding an adapter_config.json and plain files)",
                             dir_arg);
    *exists = 1;
    return TSR_OK;
}

/* Removes the plain files of `dir`, then dir. Returns 0 when all went. */
static int remove_flat_dir(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp)
        return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            unlinkat(dirfd(dp), e->d_name, 0) != 0)
            rc = -1;
    closedir(dp);
    return rmdir(dir) == 0 ? rc : -1;
}

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* "<dir><infix>XXXXXX" made by mkdtemp, then given 0777 less the umask
 * (mkdtemp's 0700 would make the adapter private). NULL with errno set. */
static char *make_unique_dir(const char *dir, const char *infix) {
    size_t n = strlen(dir) + strlen(infix) + 7;
    char *p = malloc(n);
    if (!p)
        return NULL;
    snprintf(p, n, "%s%sXXXXXX", dir, infix);
    if (!mkdtemp(p)) {
        int e = errno;
        free(p);
        errno = e;
        return NULL;
    }
    mode_t mask = umask(0);
    umask(mask);
    chmod(p, 0777 & ~mask);
    return p;
}

static tsr_status write_file(const char *dir, const tsr_cli_out_file *f) {
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", dir, f->name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    size_t done = 0;
    while (done < f->len) {
        ssize_t w = write(fd, f->data + done, f->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            return tsr_error_set(TSR_ERR_IO, "writing '%s': %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return tsr_error_set(TSR_ERR_IO, "fsync '%s': %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return tsr_error_set(TSR_ERR_IO, "writing '%s': %s", path, strerror(errno));
    return TSR_OK;
}

tsr_status tsr_cli_train_write_dir(const char *dir_arg, const tsr_cli_out_file *files,
                                   size_t n_files) {
    char dir[PATH_MAX], parent[PATH_MAX];
    int exists;
    TSR_TRY(tsr_cli_train_check_out_dir(dir_arg, &exists));
    strip_slashes(dir_arg, dir, sizeof dir);
    parent_of(dir, parent, sizeof parent);
    for (size_t i = 0; i < n_files; i++)
        if (!files[i].name[0] || strchr(files[i].name, '/'))
            return tsr_error_set(TSR_ERR_INVALID, "bad file name '%s'", files[i].name);

    char *tmp = make_unique_dir(dir, ".tmp-"), *aside = NULL;
    if (!tmp)
        return tsr_error_set(TSR_ERR_IO, "%s: cannot create a temporary directory beside it: %s",
                             dir, strerror(errno));
    tsr_status rc = TSR_OK;
    for (size_t i = 0; i < n_files && rc == TSR_OK; i++)
        rc = write_file(tmp, &files[i]);
    if (rc == TSR_OK && fsync_path(tmp) != 0)
        rc = tsr_error_set(TSR_ERR_IO, "fsync '%s': %s", tmp, strerror(errno));
    if (rc != TSR_OK)
        goto cleanup;

    if (!exists) {
        if (rename(tmp, dir) != 0) {
            rc = tsr_error_set(TSR_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp,
                               strerror(errno));
            goto cleanup;
        }
        free(tmp);
        tmp = NULL;
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        /* tmp is the old adapter now: removed below */
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        rc = tsr_error_set(TSR_ERR_IO, "%s: cannot exchange it with %s: %s", dir, tmp,
                           strerror(errno));
        goto cleanup;
    } else {
        /* No exchange here: the old directory aside (onto an empty one,
         * which rename replaces), then the new one in. */
        if (!(aside = make_unique_dir(dir, ".old-"))) {
            rc = tsr_error_set(TSR_ERR_IO, "%s: cannot create a directory beside it: %s", dir,
                               strerror(errno));
            goto cleanup;
        }
        if (rename(dir, aside) != 0) {
            rc = tsr_error_set(TSR_ERR_IO, "%s: cannot rename it to %s: %s", dir, aside,
                               strerror(errno));
            rmdir(aside);
            goto cleanup;
        }
        if (rename(tmp, dir) != 0) {
            int e = errno;
            int restored = rename(aside, dir) == 0;
            rc = tsr_error_set(TSR_ERR_IO, "%s: cannot rename %s to it: %s%s%s%s", dir, tmp,
                               strerror(e), restored ? "" : " (the previous adapter is in ",
                               restored ? "" : aside, restored ? "" : ")");
            goto cleanup;
        }
        free(tmp);
        tmp = aside; /* the old adapter, removed below */
        aside = NULL;
    }
    fsync_path(parent);

cleanup:
    if (tmp) {
        /* our partial files after a failure, or the previous adapter after
         * the swap: either way not wanted (a leftover is harmless) */
        remove_flat_dir(tmp);
        fsync_path(parent);
    }
    free(tmp);
    free(aside);
    return rc;
}

/* ---- loss.csv ----------------------------------------------------------------- */

#define CSV_HEADER "step,loss,grad_norm,tokens\n"

char *tsr_cli_train_loss_csv(const tsr_cli_step_log *log, size_t n, size_t *len) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    fputs(CSV_HEADER, f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%d,%.6f,%.6f,%ld\n", log[i].step, log[i].loss, log[i].grad_norm,
                log[i].tokens);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = size;
    return buf;
}

int tsr_cli_train_loss_csv_parse(const char *text, tsr_cli_step_log **log, size_t *n) {
    *log = NULL;
    *n = 0;
    if (strncmp(text, CSV_HEADER, strlen(CSV_HEADER)) != 0)
        return -1;
    size_t cap = 0, count = 0;
    tsr_cli_step_log *out = NULL;
    for (const char *p = text + strlen(CSV_HEADER); *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        char row[256];
        tsr_cli_step_log r;
        int used = -1;
        if (ll == 0 || ll >= sizeof row)
            goto bad;
        memcpy(row, p, ll);
        row[ll] = '\0';
        if (sscanf(row, "%d,%lf,%lf,%ld%n", &r.step, &r.loss, &r.grad_norm, &r.tokens, &used) !=
                4 ||
            used != (int)ll)
            goto bad;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            tsr_cli_step_log *g = realloc(out, cap * sizeof *g);
            if (!g)
                goto bad;
            out = g;
        }
        out[count++] = r;
        p += ll + (eol ? 1 : 0);
    }
    *log = out;
    *n = count;
    return 0;
bad:
    free(out);
    return -1;
}
