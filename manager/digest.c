/*
 * digest.c - SHA-256 in hex (digest.h).
 */
#include "digest.h"

#include <openssl/evp.h>

/* Fetched at the first use and kept: the manager hashes on its loop's
 * thread only. */
static EVP_MD *sha256;

void cfm_sha256_hex(const void *p, size_t len, char out[CFM_SHA256_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    out[0] = '\0';
    if (!sha256)
        sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
    if (!sha256 || EVP_Digest(p, len, md, &mdlen, sha256, NULL) != 1 || mdlen != 32)
        return;
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[CFM_SHA256_HEX_LEN] = '\0';
}
