/* base/fs.c - whole-file reads, complete and durable writes, atomic
 * directory writes and the adapter-directory rule (base/fs.h). */
#include "base/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/rng.h"

tsr_status tsr_fs_read_file(const char *path, size_t max, char **out, size_t *len) {
    *out = NULL;
    if (len)
        *len = 0;
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return tsr_error_set(TSR_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    tsr_status st = buf ? TSR_OK : TSR_ERR_NOMEM;
    while (st == TSR_OK) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                st = TSR_ERR_NOMEM;
                break;
            }
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (max && n > max) {
            st = tsr_error_set(TSR_ERR_RANGE, "'%s' is larger than the %zu bytes allowed", path,
                               max);
            break;
        }
        if (r == 0)
            break;
    }
    if (st == TSR_ERR_NOMEM)
        tsr_error_set(st, "reading '%s': out of memory after %zu bytes", path, n);
    else if (st == TSR_OK && ferror(f))
        st = tsr_error_set(TSR_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    if (!is_stdin)
        fclose(f);
    if (st != TSR_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return TSR_OK;
}

tsr_status tsr_fs_write_all(int fd, const void *buf, size_t n, const char *what) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return tsr_error_set(TSR_ERR_IO, "cannot write '%s': %s", what,
                                 w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return TSR_OK;
}

tsr_status tsr_fs_create(const char *path, int *fd) {
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (*fd < 0)
        return tsr_error_set(TSR_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    return TSR_OK;
}

tsr_status tsr_fs_close_synced(int fd, const char *path, tsr_status st) {
    if (st == TSR_OK && fsync(fd) != 0)
        st = tsr_error_set(TSR_ERR_IO, "cannot fsync '%s': %s", path, strerror(errno));
    if (close(fd) != 0 && st == TSR_OK)
        st = tsr_error_set(TSR_ERR_IO, "cannot close '%s': %s", path, strerror(errno));
    return st;
}

tsr_status tsr_fs_write_file(const char *path, const void *data, size_t n) {
    int fd;
    TSR_TRY(tsr_fs_create(path, &fd));
    return tsr_fs_close_synced(fd, path, tsr_fs_write_all(fd, data, n, path));
}

tsr_status tsr_fs_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tsr_error_set(TSR_ERR_IO, "cannot open '%s' to fsync it: %s", path, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return tsr_error_set(TSR_ERR_IO, "cannot fsync '%s': %s", path, strerror(e));
    return TSR_OK;
}

/* ---- names ----------------------------------------------------------------- */

/* A malloc'd copy of path without its trailing slashes ("/" stays); NULL
 * when out of memory. */
static char *strip_slashes(const char *path) {
    char *p = strdup(path);
    for (size_t n = p ? strlen(p) : 0; n > 1 && p[n - 1] == '/'; n--)
        p[n - 1] = '\0';
    return p;
}

/* The directory holding `path` (malloc'd; path has no trailing slash): "."
 * when it has no slash. */
static char *parent_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Whether `dir` (no trailing slash) names something a directory could be
 * written to and replaced: not "", "/", or ending in "." or "..". */
static int name_ok(const char *dir) {
    const char *base = strrchr(dir, '/');
    base = base ? base + 1 : dir;
    return dir[0] && strcmp(dir, "/") != 0 && strcmp(base, ".") != 0 && strcmp(base, "..") != 0;
}

/* ---- the adapter-directory rule ----------------------------------------------- */

#define ADAPTER_RULE                                                                               \
    "an adapter directory is replaced only when empty or holding " TSR_FS_ADAPTER_CONFIG           \
    " and regular files"

/* The rule on `dir` (stripped), messages naming `arg` as given. */
static tsr_status check_adapter_dir(const char *dir, const char *arg, int *exists) {
    *exists = 0;
    if (!name_ok(dir))
        return tsr_error_set(TSR_ERR_INVALID,
                             "'%s' cannot be an adapter directory (name a new directory or one "
                             "holding an adapter saved before)",
                             arg);
    char *parent = parent_of(dir);
    if (!parent)
        return tsr_error_set(TSR_ERR_NOMEM, "'%s': out of memory", arg);
    struct stat sb;
    tsr_status st = TSR_OK;
    if (stat(parent, &sb) != 0)
        st = tsr_error_set(TSR_ERR_IO, "'%s': its parent directory '%s': %s", arg, parent,
                           strerror(errno));
    else if (!S_ISDIR(sb.st_mode))
        st = tsr_error_set(TSR_ERR_IO, "'%s': its parent '%s' is not a directory", arg, parent);
    else if (access(parent, W_OK | X_OK) != 0)
        st = tsr_error_set(TSR_ERR_IO, "'%s': cannot write in its parent directory '%s': %s", arg,
                           parent, strerror(errno));
    free(parent);
    TSR_TRY(st);
    if (lstat(dir, &sb) != 0) {
        if (errno == ENOENT)
            return TSR_OK;
        return tsr_error_set(TSR_ERR_IO, "'%s': cannot stat it: %s", arg, strerror(errno));
    }
    if (S_ISLNK(sb.st_mode))
        return tsr_error_set(TSR_ERR_INVALID,
                             "'%s' is a symbolic link; give the directory it points to (the "
                             "directory itself is replaced)",
                             arg);
    if (!S_ISDIR(sb.st_mode))
        return tsr_error_set(TSR_ERR_IO, "'%s' exists and is not a directory (it is not replaced)",
                             arg);
    DIR *d = opendir(dir);
    if (!d)
        return tsr_error_set(TSR_ERR_IO, "'%s': cannot open the directory: %s", arg,
                             strerror(errno));
    int n = 0, has_config = 0;
    struct dirent *de;
    while (st == TSR_OK && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        struct stat es;
        if (fstatat(dirfd(d), de->d_name, &es, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(es.st_mode))
            st = tsr_error_set(TSR_ERR_INVALID,
                               "'%s' is not an adapter directory: '%s' in it is not a regular "
                               "file (" ADAPTER_RULE ")",
                               arg, de->d_name);
        if (strcmp(de->d_name, TSR_FS_ADAPTER_CONFIG) == 0)
            has_config = 1;
    }
    closedir(d);
    TSR_TRY(st);
    if (n > 0 && !has_config)
        return tsr_error_set(
            TSR_ERR_INVALID,
            "'%s' is not an adapter directory: it is not empty and holds no " TSR_FS_ADAPTER_CONFIG
            " (" ADAPTER_RULE ")",
            arg);
    *exists = 1;
    return TSR_OK;
}

tsr_status tsr_fs_check_adapter_dir(const char *dir_arg, int *exists) {
    *exists = 0;
    char *dir = strip_slashes(dir_arg);
    if (!dir)
        return tsr_error_set(TSR_ERR_NOMEM, "'%s': out of memory", dir_arg);
    tsr_status st = check_adapter_dir(dir, dir_arg, exists);
    free(dir);
    return st;
}

/* ---- atomic directory writes ---------------------------------------------------- */

/* Removes the regular files in `dir`, then `dir`. Best effort: TSR_ERR_IO
 * when something stayed. */
static tsr_status remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? TSR_OK
                               : tsr_error_set(TSR_ERR_IO, "cannot open '%s' to remove it: %s", dir,
                                               strerror(errno));
    int ok = 1;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
            unlinkat(dirfd(d), de->d_name, 0) != 0)
            ok = 0;
    closedir(d);
    if (rmdir(dir) != 0 || !ok)
        return tsr_error_set(TSR_ERR_IO, "cannot remove '%s' entirely: %s", dir, strerror(errno));
    return TSR_OK;
}

/* Makes "<base><tag>XXXXXX" (six random letters or digits) with mode 0777
 * less the umask, as mkdir(1) would: mkdtemp's 0700 would become the final
 * directory's mode (and setting the mode afterwards needs the process-wide
 * umask). Returns the malloc'd name, or NULL with errno set. */
static char *make_unique_dir(const char *base, const char *tag) {
    static const char set[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t n = strlen(base) + strlen(tag) + 7;
    char *p = malloc(n);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    snprintf(p, n, "%s%sXXXXXX", base, tag);
    char *x = p + n - 7;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t st = ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16) ^
                  (uint64_t)(uintptr_t)p;
    for (int attempt = 0; attempt < 1000; attempt++) {
        for (int i = 0; i < 6; i++)
            x[i] = set[tsr_splitmix64(&st) % (sizeof set - 1)];
        if (mkdir(p, 0777) == 0)
            return p;
        if (errno != EEXIST)
            break;
    }
    int e = errno;
    free(p);
    errno = e;
    return NULL;
}

void tsr_fs_dir_write_free(tsr_fs_dir_write *w) {
    if (!w)
        return;
    if (w->tmp && remove_flat_dir(w->tmp) != TSR_OK)
        TSR_LOG_W("%s: could not remove the temporary directory %s", w->dir, w->tmp);
    free(w->tmp);
    free(w->dir);
    memset(w, 0, sizeof *w);
}

tsr_status tsr_fs_dir_write_begin(tsr_fs_dir_write *w, const char *dir_arg, int replace_adapter) {
    memset(w, 0, sizeof *w);
    w->dir = strip_slashes(dir_arg);
    if (!w->dir)
        return tsr_error_set(TSR_ERR_NOMEM, "'%s': out of memory", dir_arg);
    tsr_status st = TSR_OK;
    int exists = 0;
    if (replace_adapter)
        st = check_adapter_dir(w->dir, dir_arg, &exists);
    else if (!name_ok(w->dir))
        st = tsr_error_set(TSR_ERR_INVALID, "'%s' cannot be a directory to write", dir_arg);
    if (st == TSR_OK) {
        w->replace = replace_adapter;
        w->tmp = make_unique_dir(w->dir, ".tmp-");
        if (!w->tmp)
            st = tsr_error_set(TSR_ERR_IO, "%s: cannot create a temporary directory beside it: %s",
                               w->dir, strerror(errno));
    }
    if (st != TSR_OK)
        tsr_fs_dir_write_free(w);
    return st;
}

static void hook(const tsr_fs_commit_hooks *h, const char *stage) {
    if (h && h->pause)
        h->pause(h->ctx, stage);
}

tsr_status tsr_fs_dir_write_commit(tsr_fs_dir_write *w, const tsr_fs_commit_hooks *hooks) {
    if (!w || !w->tmp)
        return tsr_error_set(TSR_ERR_INVALID, "tsr_fs_dir_write_commit: nothing begun");
    const char *dir = w->dir, *tmp = w->tmp;
    char *parent = parent_of(dir), *aside = NULL, *old = NULL;
    if (!parent)
        return tsr_error_set(TSR_ERR_NOMEM, "%s: out of memory", dir);
    tsr_status st = tsr_fs_fsync_path(tmp);
    if (st != TSR_OK)
        goto cleanup;
    hook(hooks, "files");

    /* Crash windows: until the swap `dir` is the old directory (or absent)
     * and tmp a partial or complete new one; after it `dir` is the new one
     * and the old one waits under tmp's (or the .old-) name for removal. */
    struct stat sb;
    int exists = w->replace && lstat(dir, &sb) == 0;
    if (!exists) {
        if (rename(tmp, dir) != 0) {
            st = tsr_error_set(TSR_ERR_IO, "%s: cannot rename %s to it: %s", dir, tmp,
                               strerror(errno));
            goto cleanup;
        }
        free(w->tmp);
        w->tmp = NULL;
        st = tsr_fs_fsync_path(parent);
        hook(hooks, "swapped");
        goto cleanup;
    }
    if (!(hooks && hooks->no_exchange)) {
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
            old = w->tmp; /* tmp's name now holds the old directory */
            w->tmp = NULL;
        } else if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
            st = tsr_error_set(TSR_ERR_IO, "%s: cannot exchange it with %s: %s", dir, tmp,
                               strerror(errno));
            goto cleanup;
        }
    }
    if (!old) {
        /* The rename-aside path: the old directory onto an empty one (which
         * rename replaces), then the new one in. */
        aside = make_unique_dir(dir, ".old-");
        if (!aside) {
            st = tsr_error_set(TSR_ERR_IO, "%s: cannot create a directory beside it: %s", dir,
                               strerror(errno));
            goto cleanup;
        }
        if (rename(dir, aside) != 0) {
            st = tsr_error_set(TSR_ERR_IO, "%s: cannot rename it to %s: %s", dir, aside,
                               strerror(errno));
            rmdir(aside);
            goto cleanup;
        }
        tsr_fs_fsync_path(parent);
        hook(hooks, "aside");
        if (rename(tmp, dir) != 0) {
            st = tsr_error_set(TSR_ERR_IO,
                               "%s: cannot rename %s to it: %s (the previous "
                               "directory is in %s)",
                               dir, tmp, strerror(errno), aside);
            if (rename(aside, dir) == 0)
                tsr_error_wrap(st, "restored the previous directory");
            goto cleanup;
        }
        free(w->tmp);
        w->tmp = NULL;
        old = aside;
        aside = NULL;
    }
    st = tsr_fs_fsync_path(parent);
    if (st == TSR_OK)
        hook(hooks, "swapped");

cleanup:
    if (old) {
        if (remove_flat_dir(old) != TSR_OK)
            TSR_LOG_W("%s: written, but the previous directory could not be fully removed from "
                      "%s",
                      dir, old);
        tsr_fs_fsync_path(parent); /* the removal need not be durable */
    }
    free(old);
    free(aside);
    free(parent);
    return st;
}
