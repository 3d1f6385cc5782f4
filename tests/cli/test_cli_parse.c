/* tests/cli/test_cli_parse.c - tessera-cli's flag-value parsers
 * (launcher/cli_parse.h): id lists, token characters, files. The number
 * parsers are base/opt.h's, checked by tests/unit/test_opt.c. Exits 0, or 1
 * at the first failed check. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launcher/cli_parse.h"
#include "tests/common/check.h"

static void check_list(const char *s, const int32_t *want, size_t n_want) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = tsr_cli_parse_id_list(s, &ids, &n);
    if (!want) {
        CHECK(rc == -1 && ids == NULL && n == 0);
        return;
    }
    CHECK(rc == 0 && n == n_want);
    for (size_t k = 0; k < n; k++)
        CHECK(ids[k] == want[k]);
    free(ids);
}

static void test_id_lists(void) {
    const int32_t a[] = {1, 2, 3};
    check_list("1,2,3", a, 3);
    check_list("1 2 3", a, 3);
    check_list(" 1, 2 ,3 ", a, 3);
    check_list("1\t2\n3", a, 3);
    const int32_t b[] = {-1, 128000};
    check_list("-1,128000", b, 2);
    const int32_t c[] = {7};
    check_list("7", c, 1);
    check_list("", NULL, 0);
    check_list("   ", NULL, 0);
    check_list("1,,2", NULL, 0);
    check_list(",1", NULL, 0);
    check_list("1,", NULL, 0);
    check_list("1-2", NULL, 0);
    check_list("1x", NULL, 0);
    check_list("a", NULL, 0);
    check_list("1,2147483648", NULL, 0);
    check_list(NULL, NULL, 0);
}

static void test_tokens_and_strip(void) {
    CHECK(tsr_cli_is_token_chars("abc-DEF_123.~+/="));
    CHECK(!tsr_cli_is_token_chars(""));
    CHECK(!tsr_cli_is_token_chars("two words"));
    CHECK(!tsr_cli_is_token_chars("tab\there"));
    CHECK(!tsr_cli_is_token_chars("caf\xc3\xa9"));
    char s1[] = "token \r\n\t";
    CHECK(strcmp(tsr_cli_rstrip(s1), "token") == 0);
    char s2[] = "";
    CHECK(strcmp(tsr_cli_rstrip(s2), "") == 0);
    char s3[] = " lead";
    CHECK(strcmp(tsr_cli_rstrip(s3), " lead") == 0);
}

static void test_read_file(void) {
    char path[] = "/tmp/tessera-cli-parse-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    /* larger than one read, with a NUL inside */
    size_t n = 20000;
    char *data = malloc(n);
    CHECK(data != NULL);
    for (size_t k = 0; k < n; k++)
        data[k] = (char)('a' + k % 26);
    data[100] = '\0';
    CHECK(write(fd, data, n) == (ssize_t)n);
    close(fd);
    size_t len = 0;
    char *got = tsr_cli_read_file(path, &len);
    CHECK(got != NULL && len == n && memcmp(got, data, n) == 0 && got[n] == '\0');
    free(got);
    unlink(path);
    free(data);

    errno = 0;
    CHECK(tsr_cli_read_file("/nonexistent/tessera/file", &len) == NULL && errno == ENOENT);

    char empty[] = "/tmp/tessera-cli-parse-XXXXXX";
    fd = mkstemp(empty);
    CHECK(fd >= 0);
    close(fd);
    got = tsr_cli_read_file(empty, &len);
    CHECK(got != NULL && len == 0 && got[0] == '\0');
    free(got);
    unlink(empty);
}

int main(void) {
    test_id_lists();
    test_tokens_and_strip();
    test_read_file();
    printf("test_cli_parse: ok\n");
    return 0;
}
