/* tests/unit/test_fs.c - base/fs.h: durable writes, the adapter-directory
 * rule's acceptances and refusals, and atomic directory writes (the old
 * directory kept whole when a write fails, replaced whole when it succeeds,
 * on both the exchange and the rename-aside path), in a fresh mkdtemp
 * directory. */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

/* The whole content of `path` equals `text`. */
static int holds(const char *path, const char *text) {
    char *buf;
    size_t n;
    if (tsr_fs_read_file(path, 0, &buf, &n) != TSR_OK)
        return 0;
    int same = n == strlen(text) && memcmp(buf, text, n) == 0;
    free(buf);
    return same;
}

/* A rule refusal with `code` whose message holds `part`. */
static void check_refused(const char *dir, tsr_status code, const char *part) {
    int exists = -1;
    tsr_status st = tsr_fs_check_adapter_dir(dir, &exists);
    CHECK(st == code, "%s: %s, want %s", dir, tsr_status_str(st), tsr_status_str(code));
    CHECK(strstr(tsr_error_msg(), part), "%s: message lacks '%s'", dir, part);
    CHECK(exists == 0, "%s: exists %d on refusal", dir, exists);
}

static void test_write_file(void) {
    const char *p = tu_tmp_path("file.bin");
    CHECK_OK(tsr_fs_write_file(p, "hello", 5));
    CHECK(holds(p, "hello"), "content");
    CHECK(tsr_fs_write_file(p, "again", 5) == TSR_ERR_IO, "an existing file is not overwritten");
    CHECK(strstr(tsr_error_msg(), p), "message names the path");
    CHECK(holds(p, "hello"), "content kept");
    CHECK_OK(tsr_fs_fsync_path(p));
    CHECK_OK(tsr_fs_fsync_path(tu_tmp_root));
    CHECK(tsr_fs_fsync_path(tu_tmp_path("missing")) == TSR_ERR_IO, "fsync of a missing path");
}

static void test_rule(void) {
    int exists = -1;
    CHECK_OK(tsr_fs_check_adapter_dir(tu_tmp_path("new"), &exists));
    CHECK(exists == 0, "absent: exists %d", exists);
    CHECK(mkdir(tu_tmp_path("empty"), 0755) == 0, "mkdir");
    CHECK_OK(tsr_fs_check_adapter_dir(tu_tmp_path("empty//"), &exists));
    CHECK(exists == 1, "empty: exists %d", exists);
    CHECK(mkdir(tu_tmp_path("ad"), 0755) == 0, "mkdir");
    tu_write_text(tu_tmp_path("ad/" TSR_FS_ADAPTER_CONFIG), "{}");
    tu_write_text(tu_tmp_path("ad/other.bin"), "x");
    CHECK_OK(tsr_fs_check_adapter_dir(tu_tmp_path("ad"), &exists));
    CHECK(exists == 1, "adapter: exists %d", exists);

    check_refused("", TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused("/", TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused(tu_tmp_path("."), TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused(tu_tmp_path("ad/.."), TSR_ERR_INVALID, "cannot be an adapter directory");
    CHECK(mkdir(tu_tmp_path("notes"), 0755) == 0, "mkdir");
    tu_write_text(tu_tmp_path("notes/notes.txt"), "keep me");
    check_refused(tu_tmp_path("notes"), TSR_ERR_INVALID, "is not an adapter directory");
    CHECK(mkdir(tu_tmp_path("nested"), 0755) == 0 && mkdir(tu_tmp_path("nested/sub"), 0755) == 0,
          "mkdir");
    tu_write_text(tu_tmp_path("nested/" TSR_FS_ADAPTER_CONFIG), "{}");
    check_refused(tu_tmp_path("nested"), TSR_ERR_INVALID, "not a regular file");
    CHECK(symlink(tu_tmp_path("ad"), tu_tmp_path("link")) == 0, "symlink");
    check_refused(tu_tmp_path("link"), TSR_ERR_INVALID, "symbolic link");
    check_refused(tu_tmp_path("notes/notes.txt"), TSR_ERR_IO, "exists and is not a directory");
    check_refused(tu_tmp_path("no/such"), TSR_ERR_IO, "No such file");
    check_refused(tu_tmp_path("notes/notes.txt/x"), TSR_ERR_IO, "is not a directory");
    CHECK(holds(tu_tmp_path("notes/notes.txt"), "keep me"), "a refusal changes nothing");
}

/* Writes files {name: text} through a dir write of `dir`; fail_after >= 0
 * makes the write of that file fail (the caller gives up before commit). */
static tsr_status write_dir(const char *dir, const char *const *names, const char *const *texts,
                            int n, int fail_after, const tsr_fs_commit_hooks *hooks) {
    tsr_fs_dir_write w;
    TSR_TRY(tsr_fs_dir_write_begin(&w, dir, 1));
    tsr_status st = TSR_OK;
    for (int i = 0; i < n && st == TSR_OK; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", w.tmp, names[i]);
        st = i == fail_after ? tsr_error_set(TSR_ERR_IO, "injected failure writing %s", p)
                             : tsr_fs_write_file(p, texts[i], strlen(texts[i]));
    }
    if (st == TSR_OK)
        st = tsr_fs_dir_write_commit(&w, hooks);
    tsr_fs_dir_write_free(&w);
    return st;
}

static int g_stages;
static void count_stage(void *ctx, const char *stage) {
    (void)ctx;
    if (!strcmp(stage, "files"))
        g_stages |= 1;
    else if (!strcmp(stage, "aside"))
        g_stages |= 2;
    else if (!strcmp(stage, "swapped"))
        g_stages |= 4;
}

static void test_dir_write(void) {
    static const char *const names[] = {TSR_FS_ADAPTER_CONFIG, "weights.bin"};
    static const char *const v1[] = {"{\"v\": 1}", "one"}, *const v2[] = {"{\"v\": 2}", "two"},
                             *const v3[] = {"{\"v\": 3}", "three"};
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_tmp_path("out"));
    mode_t old_mask = umask(022);
    CHECK_OK(write_dir(dir, names, v1, 2, -1, NULL));
    umask(old_mask);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0755, "mode %o follows the umask",
          (unsigned)(sb.st_mode & 0777));
    CHECK(holds(tu_tmp_path("out/weights.bin"), "one") && tu_count_entries(dir) == 2,
          "first write whole");

    /* A failed write leaves the old directory whole and no temporary one. */
    CHECK(write_dir(dir, names, v2, 2, 1, NULL) == TSR_ERR_IO, "injected failure");
    CHECK(holds(tu_tmp_path("out/" TSR_FS_ADAPTER_CONFIG), "{\"v\": 1}") &&
              holds(tu_tmp_path("out/weights.bin"), "one") && tu_count_entries(dir) == 2,
          "old directory kept whole on failure");
    tu_check_no_leftovers(tu_tmp_root);

    /* Success replaces it whole (exchange path): stale files go too. */
    tu_write_text(tu_tmp_path("out/stale.txt"), "old");
    g_stages = 0;
    tsr_fs_commit_hooks h = {count_stage, NULL, 0};
    CHECK_OK(write_dir(dir, names, v2, 2, -1, &h));
    CHECK(holds(tu_tmp_path("out/weights.bin"), "two") && tu_count_entries(dir) == 2,
          "replaced whole");
    CHECK(g_stages == (1 | 4), "exchange stages 0x%x", g_stages);
    tu_check_no_leftovers(tu_tmp_root);

    /* The rename-aside path. */
    g_stages = 0;
    h.no_exchange = 1;
    CHECK_OK(write_dir(tu_tmp_path("out/"), names, v3, 2, -1, &h));
    CHECK(holds(tu_tmp_path("out/weights.bin"), "three") && tu_count_entries(dir) == 2,
          "replaced whole (aside)");
    CHECK(g_stages == (1 | 2 | 4), "aside stages 0x%x", g_stages);
    tu_check_no_leftovers(tu_tmp_root);

    /* Refused targets are untouched. */
    CHECK(write_dir(tu_tmp_path("notes"), names, v1, 2, -1, NULL) == TSR_ERR_INVALID,
          "not an adapter");
    CHECK(holds(tu_tmp_path("notes/notes.txt"), "keep me") &&
              tu_count_entries(tu_tmp_path("notes")) == 1,
          "untouched");
    tu_check_no_leftovers(tu_tmp_root);

    /* Without replace_adapter: absent or empty only (rename(2)). */
    tsr_fs_dir_write w;
    CHECK_OK(tsr_fs_dir_write_begin(&w, tu_tmp_path("ad"), 0));
    CHECK(tsr_fs_dir_write_commit(&w, NULL) == TSR_ERR_IO, "a non-empty directory is not replaced");
    tsr_fs_dir_write_free(&w);
    CHECK(tu_count_entries(tu_tmp_path("ad")) == 2, "kept");
    CHECK_OK(tsr_fs_dir_write_begin(&w, tu_tmp_path("empty"), 0));
    CHECK_OK(tsr_fs_dir_write_commit(&w, NULL));
    tsr_fs_dir_write_free(&w);
    CHECK(tu_count_entries(tu_tmp_path("empty")) == 0, "an empty directory is replaced");
    CHECK(tsr_fs_dir_write_begin(&w, "/", 0) == TSR_ERR_INVALID, "\"/\"");
    tsr_fs_dir_write_free(&w); /* empty: a no-op */
    tsr_fs_dir_write_free(NULL);
    tu_check_no_leftovers(tu_tmp_root);
}

int main(void) {
    tu_tmpdir_make("tsr-fs");
    test_write_file();
    test_rule();
    test_dir_write();
    tu_tmpdir_remove();
    puts("test_fs: ok");
    return 0;
}
