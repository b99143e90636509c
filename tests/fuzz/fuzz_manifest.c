/*
 * fuzz_manifest.c - libFuzzer harness of the manifest parser
 * (ckpt_manifest_parse).  The input is the manifest's body; the harness
 * appends the matching "self HASH" line, as a forger would, so that the
 * parse goes past the self hash into every field and the structure
 * checks.  A manifest it accepts is then walked: every dataset found by
 * name, every piece by offset.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CKPT_ERRMAX], self[40];
    struct ckpt_manifest m;
    if (size > ((size_t)1 << 20))
        return 0;
    int n = snprintf(self, sizeof self, "self %016llx\n",
                     (unsigned long long)ckpt_hash64(data, size));
    char *text = malloc(size + (size_t)n + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    memcpy(text + size, self, (size_t)n + 1);
    memset(&m, 0, sizeof m);
    if (ckpt_manifest_parse(text, size + (size_t)n, "fuzz.manifest", &m,
                            err) == 0) {
        for (size_t i = 0; i < m.ext.n; i++)
            if (ckpt_manifest_find(&m, m.ext.e[i].name) == NULL)
                abort();
        for (int64_t i = 0; i < m.npieces; i++)
            if (ckpt_manifest_piece_at(&m, m.piece[i].off) != i)
                abort();
    }
    ckpt_manifest_free(&m); /* frees text */
    return 0;
}
