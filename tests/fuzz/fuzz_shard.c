/*
 * fuzz_shard.c - libFuzzer harness of the token shard reader: the input
 * is a shard file's bytes; shard_validate checks header, size and tokens
 * (vocab 256), and a shard it accepts is read as a split: the train
 * batches of a few steps and a validation batch, every token checked to
 * be below the vocabulary.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], name[] = "fuzz.bin";
    void *buf = malloc(size ? size : 1); /* aligned for uint16 tokens */
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct shard s;
    memset(&s, 0, sizeof s);
    s.path = name;
    s.map = buf;
    s.map_len = size;
    if (shard_validate(&s, 256, err, sizeof err) == 0) {
        struct dataset ds = {&s, 1, s.ntok};
        const int T = 8, B = 2;
        int32_t inp[B * T], tgt[B * T];
        if (ds.ntok > T) {
            for (int64_t step = 0; step < 3; step++) {
                dataset_train_batch(&ds, 7, step, 0, B, T, inp, tgt);
                for (int i = 0; i < B * T; i++)
                    if (inp[i] < 0 || inp[i] >= 256 || tgt[i] < 0 ||
                        tgt[i] >= 256)
                        abort();
            }
            dataset_val_batch(&ds, 1, B, 0, B, T, inp, tgt, NULL);
        }
    }
    free(buf);
    return 0;
}
