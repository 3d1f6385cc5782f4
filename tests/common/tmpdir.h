/* tests/common/tmpdir.h - a fresh scratch directory for a C test: made with
 * mkdtemp under $TMPDIR (or /tmp), paths inside it, small text files written
 * into it, its entries counted and checked for leftovers of an atomic write,
 * and the whole tree removed at the end.
 *
 *   tu_tmpdir_make("tsr-fs")        at the start of main: $TMPDIR/tsr-fs-XXXXXX
 *   tu_tmp_path("a/b")              "<dir>/a/b" (8 rotating buffers: up to 8
 *                                   results may be in use at once)
 *   tu_write_text(path, text)       CHECKs that the whole text was written
 *   tu_count_entries(dir)           entries but "." and ".."; -1: no such dir
 *   tu_check_no_leftovers(dir)      CHECKs that nothing "*.tmp-*"/"*.old-*" is left
 *   tu_tmpdir_remove()              at the end of main; 0, or -1 when something
 *                                   could not be removed
 *
 * What it is not: a fixture. One directory per test program (each test is one
 * translation unit, so the directory's name is this header's one static). */
#ifndef TSR_TESTS_COMMON_TMPDIR_H
#define TSR_TESTS_COMMON_TMPDIR_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/common/check.h"

/* The directory tu_tmpdir_make made ("" before). */
static char tu_tmp_root[512] __attribute__((unused));

/* Makes $TMPDIR/<prefix>-XXXXXX (/tmp when TMPDIR is unset or empty); ends
 * the test when it cannot. Returns the directory's path. */
static inline const char *tu_tmpdir_make(const char *prefix) {
    const char *base = getenv("TMPDIR");
    snprintf(tu_tmp_root, sizeof tu_tmp_root, "%s/%s-XXXXXX", base && base[0] ? base : "/tmp",
             prefix);
    CHECK(mkdtemp(tu_tmp_root), "mkdtemp %s", tu_tmp_root);
    return tu_tmp_root;
}

/* "<the directory>/<name>", in one of 8 buffers used in turn. */
static inline const char *tu_tmp_path(const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tu_tmp_root, name);
    return buf[k];
}

/* Writes `text` to `path` (created or truncated); ends the test on failure. */
static inline void tu_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f, "cannot create %s", path);
    int put = fputs(text, f) >= 0;
    CHECK(fclose(f) == 0 && put, "cannot write %s", path);
}

/* How many entries `dir` holds, "." and ".." not counted; -1 when it cannot
 * be opened. */
static inline int tu_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* CHECKs that `dir` holds nothing named "*.tmp-*" or "*.old-*" (what an
 * atomic directory write leaves behind when it does not clean up). */
static inline void tu_check_no_leftovers(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d, "opendir %s", dir);
    struct dirent *e;
    while ((e = readdir(d)))
        CHECK(!strstr(e->d_name, ".tmp-") && !strstr(e->d_name, ".old-"), "left: %s/%s", dir,
              e->d_name);
    closedir(d);
}

static inline int tu_rm_entry_(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes the directory and everything in it; 0, or -1 (with a message on
 * stderr) when something could not be removed. */
static inline int tu_tmpdir_remove(void) {
    if (!tu_tmp_root[0])
        return 0;
    if (nftw(tu_tmp_root, tu_rm_entry_, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(stderr, "could not remove %s\n", tu_tmp_root);
        return -1;
    }
    return 0;
}

#endif
