/*
 * fuzz_config.c - libFuzzer harness of the INI/config parser: the input
 * is INI text (config_load_text, then config_finalize and the round trip
 * through config_to_text), and the same bytes split at newlines as
 * command-line arguments (config_parse_args with an extra option).
 * Invariant checked: a text that loads and finalizes round-trips to the
 * same config (config_to_text -> config_load_text -> equal bytes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static void round_trip(const struct config *c)
{
    char *t = config_to_text(c), err[512];
    struct config d;
    if (!t)
        return;
    config_defaults(&d);
    if (config_load_text(&d, t, "round trip", err, sizeof err) != 0 ||
        config_finalize(&d, err, sizeof err) != 0 ||
        memcmp(c, &d, sizeof d) != 0)
        abort(); /* what we wrote, we must read back */
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1), err[512];
    struct config c;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    config_defaults(&c);
    if (config_load_text(&c, text, "fuzz.ini", err, sizeof err) == 0 &&
        config_finalize(&c, err, sizeof err) == 0)
        round_trip(&c);

    /* the bytes as arguments, one per line */
    char *argv[64];
    int argc = 0;
    for (char *p = text; p && argc < 64;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        argv[argc++] = p;
        p = nl ? nl + 1 : NULL;
    }
    static const char *const extra[] = {"bench_steps", NULL};
    const char *ev[1] = {"5"};
    config_defaults(&c);
    if (config_parse_args(&c, argc, argv, extra, ev, err, sizeof err) == 0)
        config_finalize(&c, err, sizeof err);
    free(text);
    return 0;
}
