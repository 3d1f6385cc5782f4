/* tests/cli/test_cli_train_files.c - the local half of `tessera-cli train`
 * (launcher/cli_train.h): the JSONL reader and its file:line errors, the
 * epoch plan it shares with `tessera train` (runtime/train/epoch.h: the
 * shuffle against values from an independent implementation,
 * tests/cli/test_cli_train.py's, and the step plan), the --out check, the
 * atomic directory write and loss.csv. Exits 0, or 1 at the first failed
 * check. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/train/loss_csv.h"
#include "launcher/cli_train.h"
#include "runtime/train/epoch.h"
#include "base/rng.h"
#include "tests/common/check.h"
#include "tests/common/tmpdir.h"

static void test_data(void) {
    const char *p = tu_tmp_path("ok.jsonl");
    tu_write_text(p, "{\"prompt\": \"a\", \"completion\": \"b\", \"extra\": 1}\n"
                     "\n   \n"
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                     "{\"role\": \"assistant\", \"content\": \"h\\u00e9\"}]}\n");
    tsr_cli_train_data d;
    CHECK(tsr_cli_train_data_load(p, &d) == TSR_OK);
    CHECK(d.n == 2);
    CHECK(d.ex[0].line == 1 && d.ex[1].line == 4);
    const Tessera__V1__TrainExample *e0 = &d.ex[0].msg, *e1 = &d.ex[1].msg;
    CHECK(e0->input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_PROMPT_COMPLETION);
    CHECK(!strcmp(e0->prompt_completion->prompt, "a") &&
          !strcmp(e0->prompt_completion->completion, "b"));
    CHECK(e1->input_case == TESSERA__V1__TRAIN_EXAMPLE__INPUT_CHAT);
    CHECK(e1->chat->n_messages == 2 && !strcmp(e1->chat->messages[1]->role, "assistant") &&
          !strcmp(e1->chat->messages[1]->content, "h\xc3\xa9"));
    /* the messages pack: what ForwardBackward sends */
    size_t n = tessera__v1__train_example__get_packed_size(e1);
    uint8_t *buf = malloc(n);
    CHECK(buf && tessera__v1__train_example__pack(e1, buf) == n);
    Tessera__V1__TrainExample *back = tessera__v1__train_example__unpack(NULL, n, buf);
    CHECK(back && back->chat && back->chat->n_messages == 2);
    tessera__v1__train_example__free_unpacked(back, NULL);
    free(buf);
    tsr_cli_train_data_free(&d);
    CHECK(d.n == 0 && d.ex == NULL);
    tsr_cli_train_data_free(NULL);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n", ":2: not valid JSON"},
        {"\n\n{\"prompt\": \"a\"}\n", ":3: expected {\"prompt\""},
        {"[1]\n", ":1: expected a JSON object, got an array"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n",
         ":1: the conversation has no"},
        {"{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", "role \"robot\""},
        {"{\"messages\": [{\"role\": \"user\"}]}\n", "needs string \"role\" and \"content\""},
        {"{\"messages\": []}\n", "an empty array"},
        {"{\"prompt\": \"a\", \"completion\": null}\n",
         "\"completion\" must be a string, got null"},
        {"{\"messages\": [], \"prompt\": \"a\"}\n", "not both"},
        {"\n \n", "holds no example"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_write_text(p, bad[i].text);
        tsr_error_clear();
        CHECK(tsr_cli_train_data_load(p, &d) != TSR_OK);
        const char *why = tsr_error_msg();
        CHECK(d.n == 0 && d.ex == NULL);
        if (!strstr(why, bad[i].want)) {
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, why, bad[i].want);
            CHECK(0);
        }
        CHECK(bad[i].want[0] != ':' || strncmp(why, p, strlen(p)) == 0);
    }
    CHECK(tsr_cli_train_data_load(tu_tmp_path("missing.jsonl"), &d) != TSR_OK);
    CHECK(strstr(tsr_error_msg(), "cannot open the data file"));
}

static void test_order(void) {
    uint64_t s = 0;
    CHECK(tsr_splitmix64(&s) == 0xe220a8397b1dcdafull);
    CHECK(tsr_splitmix64(&s) == 0x6e789e6aa1b965f4ull);
    int perm[10];
    static const int want0[10] = {1, 4, 5, 3, 6, 0, 2, 7, 9, 8};
    tsr_epoch_shuffle(perm, 10, 0, 0);
    CHECK(memcmp(perm, want0, sizeof want0) == 0);
    static const int want1[7] = {5, 6, 3, 0, 4, 2, 1};
    tsr_epoch_shuffle(perm, 7, 7, 1);
    CHECK(memcmp(perm, want1, sizeof want1) == 0);
    static const int want2[5] = {2, 4, 1, 0, 3};
    tsr_epoch_shuffle(perm, 5, UINT64_MAX, 3);
    CHECK(memcmp(perm, want2, sizeof want2) == 0);
    tsr_epoch_shuffle(perm, 1, 9, 0);
    CHECK(perm[0] == 0);

    CHECK(tsr_epoch_total_steps(7, 3, 0, 2) == 6);
    CHECK(tsr_epoch_total_steps(7, 3, 0, 0) == 3);
    CHECK(tsr_epoch_total_steps(7, 3, 10, 2) == 10);
    CHECK(tsr_epoch_total_steps(7, 8, 0, 1) == 1);
    CHECK(tsr_epoch_total_steps(2000000000, 1, 0, 2) == 0); /* too many */
    CHECK(tsr_epoch_total_steps(0, 3, 0, 1) == 0);
    int epoch, first, count;
    static const int plan[][3] = {{0, 0, 3}, {0, 3, 3}, {0, 6, 1}, {1, 0, 3}, {1, 3, 3}};
    for (int k = 0; k < 5; k++) {
        tsr_epoch_step_batch(k, 7, 3, &epoch, &first, &count);
        CHECK(epoch == plan[k][0] && first == plan[k][1] && count == plan[k][2]);
    }
}

static void test_out_dir(void) {
    int exists = -1;
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("new"), &exists) == TSR_OK && exists == 0);
    CHECK(mkdir(tu_tmp_path("empty"), 0755) == 0);
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("empty/"), &exists) == TSR_OK && exists == 1);
    CHECK(mkdir(tu_tmp_path("other"), 0755) == 0);
    tu_write_text(tu_tmp_path("other/notes.txt"), "x");
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("other"), &exists) != TSR_OK);
    CHECK(strstr(tsr_error_msg(), "is not an adapter directory"));
    tu_write_text(tu_tmp_path("a-file"), "x");
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("a-file"), &exists) != TSR_OK);
    CHECK(strstr(tsr_error_msg(), "is not a directory"));
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("no/such"), &exists) != TSR_OK);
    CHECK(tsr_cli_train_check_out_dir("", &exists) != TSR_OK);
    CHECK(tsr_cli_train_check_out_dir("/", &exists) != TSR_OK);
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path(".."), &exists) != TSR_OK);
    CHECK(mkdir(tu_tmp_path("nested"), 0755) == 0);
    CHECK(mkdir(tu_tmp_path("nested/sub"), 0755) == 0);
    tu_write_text(tu_tmp_path("nested/adapter_config.json"), "{}");
    CHECK(tsr_cli_train_check_out_dir(tu_tmp_path("nested"), &exists) != TSR_OK);

    /* a new directory, then replaced (exchange), then an empty one filled */
    const char *dir = tu_tmp_path("adapter");
    const uint8_t one[] = "first", two[] = "second version";
    tsr_cli_out_file files[] = {{"adapter_config.json", one, sizeof one - 1},
                                {"weights.bin", two, sizeof two - 1}};
    CHECK(tsr_cli_train_write_dir(dir, files, 2) == TSR_OK);
    CHECK(tu_count_entries(dir) == 2);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0700) == 0700);
    FILE *f = fopen(tu_tmp_path("adapter/weights.bin"), "r");
    CHECK(f);
    char got[64] = "";
    CHECK(fgets(got, sizeof got, f));
    fclose(f);
    CHECK(!strcmp(got, "second version"));
    tu_write_text(tu_tmp_path("adapter/stale.txt"), "old");
    tsr_cli_out_file again[] = {{"adapter_config.json", two, sizeof two - 1}};
    CHECK(tsr_cli_train_write_dir(dir, again, 1) == TSR_OK);
    CHECK(tu_count_entries(dir) == 1); /* the old files went with the old directory */
    CHECK(tsr_cli_train_write_dir(tu_tmp_path("empty"), again, 1) == TSR_OK);
    CHECK(tu_count_entries(tu_tmp_path("empty")) == 1);
    /* refused targets stay as they were; nothing is left beside them */
    CHECK(tsr_cli_train_write_dir(tu_tmp_path("other"), again, 1) != TSR_OK);
    CHECK(tu_count_entries(tu_tmp_path("other")) == 1);
    tsr_cli_out_file bad_name[] = {{"a/b", one, 1}};
    CHECK(tsr_cli_train_write_dir(tu_tmp_path("fresh"), bad_name, 1) != TSR_OK);
    tu_check_no_leftovers(tu_tmp_root);
}

static void test_csv(void) {
    tsr_loss_row log[3] = {{1, 2.5, 1.25, 100}, {2, 2.0, 1.0, 90}, {3, 1.5, 0.5, 80}};
    size_t len;
    char *csv = tsr_loss_csv_format(log, 3, &len);
    CHECK(csv && len == strlen(csv));
    CHECK(!strcmp(csv, "step,loss,grad_norm,tokens\n1,2.500000,1.250000,100\n"
                       "2,2.000000,1.000000,90\n3,1.500000,0.500000,80\n"));
    tsr_loss_row *back;
    size_t n;
    CHECK(tsr_loss_csv_parse(csv, &back, &n) == 0 && n == 3);
    CHECK(back[2].step == 3 && back[2].loss == 1.5 && back[2].tokens == 80);
    free(back);
    free(csv);
    csv = tsr_loss_csv_format(NULL, 0, &len);
    CHECK(csv && !strcmp(csv, "step,loss,grad_norm,tokens\n"));
    CHECK(tsr_loss_csv_parse(csv, &back, &n) == 0 && n == 0);
    free(back);
    free(csv);
    CHECK(tsr_loss_csv_parse("a,b\n1,2\n", &back, &n) == -1 && back == NULL);
    CHECK(tsr_loss_csv_parse("step,loss,grad_norm,tokens\n1,x,2,3\n", &back, &n) == -1);
    CHECK(tsr_loss_csv_parse("step,loss,grad_norm,tokens\n1,1,2,3junk\n", &back, &n) == -1);
}

int main(void) {
    tu_tmpdir_make("tsr-cli-train");
    test_data();
    test_order();
    test_out_dir();
    test_csv();
    tu_tmpdir_remove();
    puts("test_cli_train_files: ok");
    return 0;
}
