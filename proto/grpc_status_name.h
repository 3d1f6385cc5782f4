/* proto/grpc_status_name.h - the canonical names of gRPC status codes, for
 * the server's access log and metrics and the client's messages alike (the
 * gRPC C core has no public function for them).
 *
 * What it is not: a mapping from tsr_status (runtime/server/grpc_api.h). */
#ifndef TSR_PROTO_GRPC_STATUS_NAME_H
#define TSR_PROTO_GRPC_STATUS_NAME_H

#include <grpc/status.h>

/* "INVALID_ARGUMENT" and so on; "UNKNOWN_CODE" for a value outside the enum.
 * Never NULL. */
const char *tsr_grpc_status_name(grpc_status_code code);

#endif
