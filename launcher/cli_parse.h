/* launcher/cli_parse.h - strict parsing of tessera-cli flag values: whole
 * numbers, id lists and small files. Every function refuses trailing junk,
 * overflow and empty input, so a typo in a flag is reported instead of being
 * read as 0.
 *
 * What it is not: the option table (that is tessera_cli.c) and not a range
 * check of sampling values, which the server does with its own messages. */
#ifndef TSR_LAUNCHER_CLI_PARSE_H
#define TSR_LAUNCHER_CLI_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Each parses all of `s` (leading/trailing blanks allowed) into *out.
 * Returns 0, or -1 leaving *out untouched when `s` is not a number of that
 * type (junk, empty, out of range, NaN). */
int tsr_cli_parse_i32(const char *s, int32_t *out);
int tsr_cli_parse_u64(const char *s, uint64_t *out); /* no sign allowed */
int tsr_cli_parse_f32(const char *s, float *out);    /* finite only */
int tsr_cli_parse_f64(const char *s, double *out);   /* finite only */

/* Parses a list of int32 ids separated by commas and/or blanks ("1,2,3",
 * "1 2 3", "1, 2"). On success returns 0 and *ids is a malloc'd array of *n
 * (>= 1) ids that the caller frees. Returns -1 for an empty list, an empty
 * element ("1,,2") or a non-number, with *ids NULL and *n 0. */
int tsr_cli_parse_id_list(const char *s, int32_t **ids, size_t *n);

/* Reads the whole file into a malloc'd, NUL-terminated buffer (*len bytes
 * before the NUL; len may be NULL). Returns NULL with errno set on failure.
 * Files over 16 MiB are refused (EFBIG): nothing tessera-cli reads is that
 * large. */
char *tsr_cli_read_file(const char *path, size_t *len);

/* Removes trailing blanks, tabs, CR and LF in place; returns s. */
char *tsr_cli_rstrip(char *s);

/* 1 when every byte of s is printable ASCII (0x21..0x7e, no space): what a
 * bearer token may hold in an HTTP/2 header. Empty strings give 0. */
int tsr_cli_is_token_chars(const char *s);

#endif
