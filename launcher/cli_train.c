/* launcher/cli_train.c - data file, output directory and loss.csv of
 * `tessera-cli train` (see cli_train.h). The data file is read by
 * runtime/train/train_record.c and the epoch plan is runtime/train/epoch.c,
 * as in `tessera train`; the directory check follows
 * runtime/train/train_loop.c's, and the atomic save
 * shard/peft.c, so the client and `tessera train` agree on what a data
 * file and an --out may be. */
#include "launcher/cli_train.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/train/train_record.h"

static int failf(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int failf(char *why, size_t why_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
    return -1;
}

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

int tsr_cli_train_data_load(const char *path, tsr_cli_train_data *d, char *why, size_t why_size) {
    memset(d, 0, sizeof *d);
    if (tsr_train_jsonl_read(path, load_record, d) != TSR_OK) {
        failf(why, why_size, "%s", tsr_error_msg());
        tsr_cli_train_data_free(d);
        return -1;
    }
    /* the examples do not move from here on: point their messages home */
    for (size_t k = 0; k < d->n; k++) {
        tsr_cli_train_example *e = &d->ex[k];
        if (e->msg.input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION)
            e->msg.prompt_completion = &e->pc;
        else
            e->msg.chat = &e->chat;
    }
    return 0;
}

void tsr_cli_train_data_free(tsr_cli_train_data *d) {
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        example_free(&d->ex[i]);
    free(d->ex);
    memset(d, 0, sizeof *d);
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

int tsr_cli_train_check_out_dir(const char *dir_arg, int *exists, char *why, size_t why_size) {
    char dir[PATH_MAX], parent[PATH_MAX];
    *exists = 0;
    if (!dir_arg[0] || strip_slashes(dir_arg, dir, sizeof dir) != 0)
        return failf(why, why_size, "--out: bad path '%s'", dir_arg);
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    if (!strcmp(dir, "/") || !strcmp(base, ".") || !strcmp(base, ".."))
        return failf(why, why_size, "--out %s cannot be an adapter directory (name a new one)",
                     dir_arg);
    parent_of(dir, parent, sizeof parent);
    struct stat ps;
    if (stat(parent, &ps) != 0)
        return failf(why, why_size, "--out %s: '%s': %s", dir_arg, parent, strerror(errno));
    if (!S_ISDIR(ps.st_mode))
        return failf(why, why_size, "--out %s: '%s' is not a directory", dir_arg, parent);
    if (access(parent, W_OK | X_OK) != 0)
        return failf(why, why_size, "--out %s: cannot write in '%s': %s", dir_arg, parent,
                     strerror(errno));
    struct stat sb;
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        return failf(why, why_size, "--out %s: %s", dir_arg, strerror(errno));
    }
    if (!S_ISDIR(sb.st_mode))
        return failf(why, why_size,
                     "--out %s exists and is not a directory (it would not be replaced)", dir_arg);
    DIR *dp = opendir(dir);
    if (!dp)
        return failf(why, why_size, "--out %s: %s", dir_arg, strerror(errno));
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
        return failf(why, why_size,
                     "--out %s exists and is not an adapter directory (it is replaced only when "
                     "empty or holding an adapter_config.json and plain files)",
                     dir_arg);
    *exists = 1;
    return 0;
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

static int write_file(const char *dir, const tsr_cli_out_file *f, char *why, size_t why_size) {
    char path[PATH_MAX + 256];
    snprintf(path, sizeof path, "%s/%s", dir, f->name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return failf(why, why_size, "cannot create '%s': %s", path, strerror(errno));
    size_t done = 0;
    while (done < f->len) {
        ssize_t w = write(fd, f->data + done, f->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            return failf(why, why_size, "writing '%s': %s", path, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return failf(why, why_size, "fsync '%s': %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return failf(why, why_size, "writing '%s': %s", path, strerror(errno));
    return 0;
}

int tsr_cli_train_write_dir(const char *dir_arg, const tsr_cli_out_file *files, size_t n_files,
                            char *why, size_t why_size) {
    char dir[PATH_MAX], parent[PATH_MAX];
    int exists;
    if (tsr_cli_train_check_out_dir(dir_arg, &exists, why, why_size) != 0)
        return -1;
    strip_slashes(dir_arg, dir, sizeof dir);
    parent_of(dir, parent, sizeof parent);
    for (size_t i = 0; i < n_files; i++)
        if (!files[i].name[0] || strchr(files[i].name, '/'))
            return failf(why, why_size, "bad file name '%s'", files[i].name);

    char *tmp = make_unique_dir(dir, ".tmp-"), *aside = NULL;
    if (!tmp)
        return failf(why, why_size, "%s: cannot create a temporary directory beside it: %s", dir,
                     strerror(errno));
    int rc = 0;
    for (size_t i = 0; i < n_files && rc == 0; i++)
        rc = write_file(tmp, &files[i], why, why_size);
    if (rc == 0 && fsync_path(tmp) != 0)
        rc = failf(why, why_size, "fsync '%s': %s", tmp, strerror(errno));
    if (rc != 0)
        goto cleanup;

    if (!exists) {
        if (rename(tmp, dir) != 0) {
            rc = failf(why, why_size, "%s: cannot rename %s to it: %s", dir, tmp,
                       strerror(errno));
            goto cleanup;
        }
        free(tmp);
        tmp = NULL;
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        /* tmp is the old adapter now: removed below */
    } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        rc = failf(why, why_size, "%s: cannot exchange it with %s: %s", dir, tmp, strerror(errno));
        goto cleanup;
    } else {
        /* No exchange here: the old directory aside (onto an empty one,
         * which rename replaces), then the new one in. */
        if (!(aside = make_unique_dir(dir, ".old-"))) {
            rc = failf(why, why_size, "%s: cannot create a directory beside it: %s", dir,
                       strerror(errno));
            goto cleanup;
        }
        if (rename(dir, aside) != 0) {
            rc = failf(why, why_size, "%s: cannot rename it to %s: %s", dir, aside,
                       strerror(errno));
            rmdir(aside);
            goto cleanup;
        }
        if (rename(tmp, dir) != 0) {
            rc = failf(why, why_size, "%s: cannot rename %s to it: %s", dir, tmp,
                       strerror(errno));
            if (rename(aside, dir) != 0)
                snprintf(why + strlen(why), why_size - strlen(why),
                         " (the previous adapter is in %s)", aside);
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
