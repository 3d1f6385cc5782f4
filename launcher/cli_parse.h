/* launcher/cli_parse.h - strict parsing of tessera-cli flag values that are
 * not single numbers: id lists, small files, bearer tokens. Every function
 * refuses trailing junk, overflow and empty input, so a typo in a flag is
 * reported instead of being read as 0.
 *
 * What it is not: the option table (that is tessera_cli.c over base/opt.h)
 * nor the number parsers, which are base/opt.h's (tsr_opt_parse_i32 ...),
 * and not a range check of sampling values, which the server does with its
 * own messages. */
#ifndef TSR_LAUNCHER_CLI_PARSE_H
#define TSR_LAUNCHER_CLI_PARSE_H

#include <stddef.h>
#include <stdint.h>

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
