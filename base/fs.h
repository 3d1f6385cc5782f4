/* base/fs.h - the file-system helpers every reader and writer of the tree
 * shares: read a whole file, write all of a buffer, write a file durably
 * (written, fsync'd, closed), and write a directory atomically: its files go
 * into a fresh "<dir>.tmp-XXXXXX" beside it, which then takes dir's place in
 * one rename. The one rule for which existing directory an adapter may
 * replace (tsr_fs_check_adapter_dir) lives here too, so `tessera train`,
 * `tessera-cli train`, the server's SaveAdapter and tsr_peft_save agree.
 *
 * What it is not: it knows no file format (shard/ writes the bytes) and never
 * removes anything but the plain files of its own temporary directories or
 * of an adapter directory it has just replaced.
 *
 * Errors come back as a tsr_status with a message naming the path and the
 * system's reason (tsr_error_msg). */
#ifndef TSR_BASE_FS_H
#define TSR_BASE_FS_H

#include <stddef.h>

#include "base/status.h"

/* The file whose presence makes a non-empty directory an adapter directory
 * (Hugging Face PEFT's adapter_config.json). */
#define TSR_FS_ADAPTER_CONFIG "adapter_config.json"

/* Reads the whole of `path` ("-" reads standard input) into a new
 * NUL-terminated buffer *out (the caller frees it) of *len bytes (len may be
 * NULL). A file longer than max bytes (0: no limit) is refused with
 * TSR_ERR_RANGE naming the limit. */
tsr_status tsr_fs_read_file(const char *path, size_t max, char **out, size_t *len);

/* Writes all n bytes to fd, retrying short writes and EINTR. `what` names
 * the file in the message. */
tsr_status tsr_fs_write_all(int fd, const void *buf, size_t n, const char *what);

/* Creates `path` for writing: it must not exist (O_EXCL); mode 0666 less the
 * umask. *fd is the open descriptor (close it with tsr_fs_close_synced). */
tsr_status tsr_fs_create(const char *path, int *fd);

/* Ends a file written through fd: when st is TSR_OK, fsyncs it; closes it
 * in any case. Returns st when it is an error, else the fsync's or close's
 * error naming `path`. */
tsr_status tsr_fs_close_synced(int fd, const char *path, tsr_status st);

/* tsr_fs_create, all n bytes, tsr_fs_close_synced: `path` holds exactly
 * data[0..n) on disk when this returns TSR_OK. On error a partial file may
 * be left (inside a temporary directory, its remover's business). */
tsr_status tsr_fs_write_file(const char *path, const void *data, size_t n);

/* fsyncs `path` (a file or a directory), so that a rename or a new entry in
 * a directory is on disk. */
tsr_status tsr_fs_fsync_path(const char *path);

/* The rule for which `dir` an adapter may be saved to, the same for every
 * adapter writer. `dir` (trailing slashes ignored) may be:
 *  - absent, with an existing, writable parent directory: *exists = 0;
 *  - an empty directory, or a directory holding only regular files among
 *    which TSR_FS_ADAPTER_CONFIG (an adapter saved before): *exists = 1.
 * Everything else is refused with a message "<dir> <what is wrong>":
 * TSR_ERR_INVALID for a name that cannot be a directory to replace ("", "/",
 * a last component "." or ".."; "cannot be an adapter directory"), a
 * symbolic link ("is a symbolic link"), a directory holding something other
 * than a regular file or not empty and without TSR_FS_ADAPTER_CONFIG ("is
 * not an adapter directory"); TSR_ERR_IO for a missing or unwritable parent
 * (with the system's reason), a `dir` that exists and is not a directory
 * ("exists and is not a directory"), or a failed stat/opendir. Nothing is
 * changed on disk. */
tsr_status tsr_fs_check_adapter_dir(const char *dir, int *exists);

/* Test hooks of tsr_fs_dir_write_commit (zero: none). */
typedef struct {
    /* Called at each stage of the commit: "files" (the temporary directory
     * fsync'd, before any rename), "aside" (the old directory renamed aside;
     * rename-aside path only), "swapped" (the new directory in place, the
     * old one not yet removed). NULL: none. */
    void (*pause)(void *ctx, const char *stage);
    void *ctx;
    int no_exchange; /* 1: take the rename-aside path even where
                        renameat2(RENAME_EXCHANGE) works */
} tsr_fs_commit_hooks;

/* One atomic directory write: begin, write files into `tmp`, commit (or
 * give up with tsr_fs_dir_write_free alone). */
typedef struct {
    char *dir;   /* the target, without trailing slashes */
    char *tmp;   /* "<dir>.tmp-XXXXXX", mode 0777 less the umask; the
                         caller writes its files here. NULL once committed. */
    int replace; /* an existing directory at dir is replaced whole */
} tsr_fs_dir_write;

/* Starts writing directory `dir`. With replace_adapter, `dir` must pass
 * tsr_fs_check_adapter_dir and an adapter directory found there is replaced
 * whole at commit; without it, `dir` must be absent or an empty directory
 * when committed (rename(2) refuses anything else) and the caller checks
 * that first with its own message. Then makes the temporary directory
 * (TSR_ERR_IO "<dir>: cannot create a temporary directory beside it").
 * On error *w is empty (tsr_fs_dir_write_free on it is safe). */
tsr_status tsr_fs_dir_write_begin(tsr_fs_dir_write *w, const char *dir, int replace_adapter);

/* Puts w->tmp, whose files the caller has written (tsr_fs_write_file: each
 * fsync'd), in w->dir's place: fsyncs tmp, then
 *  - dir absent, or not replaceable: rename(2) (which replaces an empty
 *    directory and fails on any other);
 *  - dir an existing directory and w->replace: renameat2(RENAME_EXCHANGE),
 *    then the old directory (now under the tmp name) is removed; where the
 *    file system cannot exchange, dir is first renamed to a fresh
 *    "<dir>.old-XXXXXX", then tmp to dir, then the .old- one removed, and a
 *    failure of the second rename puts the old directory back.
 * At every instant dir is either the complete old directory or the complete
 * new one, except in the rename-aside window where it is absent (the old one
 * complete under .old-, the new one complete under .tmp-). A crash leaves at
 * worst a stale .tmp- or .old- directory beside it. Then fsyncs the parent;
 * an error there is reported although the new directory is in place. On
 * error before the swap, dir is as it was and tmp is removed. A leftover old
 * directory that cannot be removed is only logged. */
tsr_status tsr_fs_dir_write_commit(tsr_fs_dir_write *w, const tsr_fs_commit_hooks *hooks);

/* Removes w->tmp (and its plain files) when it is still there, frees the
 * names and empties *w. NULL and an empty *w are allowed. */
void tsr_fs_dir_write_free(tsr_fs_dir_write *w);

#endif
