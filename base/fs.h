/* base/fs.h - the file-system helpers every reader and writer of the tree
 * shares: read a whole file, write all of a buffer.
 *
 * Errors come back as a tsr_status with a message naming the path and the
 * system's reason (tsr_error_msg). */
#ifndef TSR_BASE_FS_H
#define TSR_BASE_FS_H

#include <stddef.h>

#include "base/status.h"

/* Reads the whole of `path` ("-" reads standard input) into a new
 * NUL-terminated buffer *out (the caller frees it) of *len bytes (len may be
 * NULL). A file longer than max bytes (0: no limit) is refused with
 * TSR_ERR_RANGE naming the limit. */
tsr_status tsr_fs_read_file(const char *path, size_t max, char **out, size_t *len);

/* Writes all n bytes to fd, retrying short writes and EINTR. `what` names
 * the file in the message. */
tsr_status tsr_fs_write_all(int fd, const void *buf, size_t n, const char *what);

#endif
