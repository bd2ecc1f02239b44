/*
 * digest.h - SHA-256 in hex, for the manager's derived ids (a run's
 * events, a rule's run) and a procedure's text hash.
 *
 * OpenSSL 3 looks the algorithm up among its providers on every
 * EVP_Digest(..., EVP_sha256(), ...): most of the cost of hashing a short
 * string, paid on every event a run publishes. The implementation is
 * fetched once here and kept for the process's life.
 */
#ifndef CFM_DIGEST_H
#define CFM_DIGEST_H

#include <stddef.h>

#define CFM_SHA256_HEX_LEN 64

/* out gets the SHA-256 of the len bytes at p as 64 lowercase hex digits
 * and a NUL; "" when OpenSSL fails (out of memory). */
void cfm_sha256_hex(const void *p, size_t len, char out[CFM_SHA256_HEX_LEN + 1]);

#endif
