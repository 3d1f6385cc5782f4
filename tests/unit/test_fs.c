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
#include "test_util.h"

static char g_root[256];

static const char *at(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_root, name);
    return buf[k];
}

static void put(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f && fputs(text, f) >= 0 && fclose(f) == 0, "write %s", path);
}

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

static int n_entries(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d, "opendir %s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* Nothing named "*.tmp-*" or "*.old-*" in the root. */
static void check_no_leftovers(void) {
    DIR *d = opendir(g_root);
    CHECK(d, "opendir %s", g_root);
    struct dirent *e;
    while ((e = readdir(d)))
        CHECK(!strstr(e->d_name, ".tmp-") && !strstr(e->d_name, ".old-"), "left: %s", e->d_name);
    closedir(d);
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
    const char *p = at("file.bin");
    CHECK_OK(tsr_fs_write_file(p, "hello", 5));
    CHECK(holds(p, "hello"), "content");
    CHECK(tsr_fs_write_file(p, "again", 5) == TSR_ERR_IO, "an existing file is not overwritten");
    CHECK(strstr(tsr_error_msg(), p), "message names the path");
    CHECK(holds(p, "hello"), "content kept");
    CHECK_OK(tsr_fs_fsync_path(p));
    CHECK_OK(tsr_fs_fsync_path(g_root));
    CHECK(tsr_fs_fsync_path(at("missing")) == TSR_ERR_IO, "fsync of a missing path");
}

static void test_rule(void) {
    int exists = -1;
    CHECK_OK(tsr_fs_check_adapter_dir(at("new"), &exists));
    CHECK(exists == 0, "absent: exists %d", exists);
    CHECK(mkdir(at("empty"), 0755) == 0, "mkdir");
    CHECK_OK(tsr_fs_check_adapter_dir(at("empty//"), &exists));
    CHECK(exists == 1, "empty: exists %d", exists);
    CHECK(mkdir(at("ad"), 0755) == 0, "mkdir");
    put(at("ad/" TSR_FS_ADAPTER_CONFIG), "{}");
    put(at("ad/other.bin"), "x");
    CHECK_OK(tsr_fs_check_adapter_dir(at("ad"), &exists));
    CHECK(exists == 1, "adapter: exists %d", exists);

    check_refused("", TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused("/", TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused(at("."), TSR_ERR_INVALID, "cannot be an adapter directory");
    check_refused(at("ad/.."), TSR_ERR_INVALID, "cannot be an adapter directory");
    CHECK(mkdir(at("notes"), 0755) == 0, "mkdir");
    put(at("notes/notes.txt"), "keep me");
    check_refused(at("notes"), TSR_ERR_INVALID, "is not an adapter directory");
    CHECK(mkdir(at("nested"), 0755) == 0 && mkdir(at("nested/sub"), 0755) == 0, "mkdir");
    put(at("nested/" TSR_FS_ADAPTER_CONFIG), "{}");
    check_refused(at("nested"), TSR_ERR_INVALID, "not a regular file");
    CHECK(symlink(at("ad"), at("link")) == 0, "symlink");
    check_refused(at("link"), TSR_ERR_INVALID, "symbolic link");
    check_refused(at("notes/notes.txt"), TSR_ERR_IO, "exists and is not a directory");
    check_refused(at("no/such"), TSR_ERR_IO, "No such file");
    check_refused(at("notes/notes.txt/x"), TSR_ERR_IO, "is not a directory");
    CHECK(holds(at("notes/notes.txt"), "keep me"), "a refusal changes nothing");
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
    snprintf(dir, sizeof dir, "%s", at("out"));
    mode_t old_mask = umask(022);
    CHECK_OK(write_dir(dir, names, v1, 2, -1, NULL));
    umask(old_mask);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0755, "mode %o follows the umask",
          (unsigned)(sb.st_mode & 0777));
    CHECK(holds(at("out/weights.bin"), "one") && n_entries(dir) == 2, "first write whole");

    /* A failed write leaves the old directory whole and no temporary one. */
    CHECK(write_dir(dir, names, v2, 2, 1, NULL) == TSR_ERR_IO, "injected failure");
    CHECK(holds(at("out/" TSR_FS_ADAPTER_CONFIG), "{\"v\": 1}") &&
              holds(at("out/weights.bin"), "one") && n_entries(dir) == 2,
          "old directory kept whole on failure");
    check_no_leftovers();

    /* Success replaces it whole (exchange path): stale files go too. */
    put(at("out/stale.txt"), "old");
    g_stages = 0;
    tsr_fs_commit_hooks h = {count_stage, NULL, 0};
    CHECK_OK(write_dir(dir, names, v2, 2, -1, &h));
    CHECK(holds(at("out/weights.bin"), "two") && n_entries(dir) == 2, "replaced whole");
    CHECK(g_stages == (1 | 4), "exchange stages 0x%x", g_stages);
    check_no_leftovers();

    /* The rename-aside path. */
    g_stages = 0;
    h.no_exchange = 1;
    CHECK_OK(write_dir(at("out/"), names, v3, 2, -1, &h));
    CHECK(holds(at("out/weights.bin"), "three") && n_entries(dir) == 2, "replaced whole (aside)");
    CHECK(g_stages == (1 | 2 | 4), "aside stages 0x%x", g_stages);
    check_no_leftovers();

    /* Refused targets are untouched. */
    CHECK(write_dir(at("notes"), names, v1, 2, -1, NULL) == TSR_ERR_INVALID, "not an adapter");
    CHECK(holds(at("notes/notes.txt"), "keep me") && n_entries(at("notes")) == 1, "untouched");
    check_no_leftovers();

    /* Without replace_adapter: absent or empty only (rename(2)). */
    tsr_fs_dir_write w;
    CHECK_OK(tsr_fs_dir_write_begin(&w, at("ad"), 0));
    CHECK(tsr_fs_dir_write_commit(&w, NULL) == TSR_ERR_IO, "a non-empty directory is not replaced");
    tsr_fs_dir_write_free(&w);
    CHECK(n_entries(at("ad")) == 2, "kept");
    CHECK_OK(tsr_fs_dir_write_begin(&w, at("empty"), 0));
    CHECK_OK(tsr_fs_dir_write_commit(&w, NULL));
    tsr_fs_dir_write_free(&w);
    CHECK(n_entries(at("empty")) == 0, "an empty directory is replaced");
    CHECK(tsr_fs_dir_write_begin(&w, "/", 0) == TSR_ERR_INVALID, "\"/\"");
    tsr_fs_dir_write_free(&w); /* empty: a no-op */
    tsr_fs_dir_write_free(NULL);
    check_no_leftovers();
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s/tsr-fs-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(g_root), "mkdtemp %s", g_root);
    test_write_file();
    test_rule();
    test_dir_write();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_root);
    if (system(cmd) != 0)
        fprintf(stderr, "test_fs: could not remove %s\n", g_root);
    puts("test_fs: ok");
    return 0;
}
