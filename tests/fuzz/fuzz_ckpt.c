/*
 * fuzz_ckpt.c - libFuzzer harness of the checkpoint reader, structure
 * aware: the input describes a checkpoint that a hostile or broken
 * writer could make with the HDF5 library itself (every root attribute
 * present or not, of any type - integers, floats, fixed or variable
 * strings, arrays - with chosen or arbitrary values; datasets of any
 * rank, shape, type and layout under the names the reader looks for and
 * others; xxh64 attributes right, wrong or of the wrong type; NaN data).
 * The file is built in memory (core driver) and read by our reader: the
 * root attribute check, `ckpt info`'s listing, and the tensor reads of
 * ckpt_read_tensors for a model of /model/w and /optim/m/w (2 x 3), on
 * MPI_COMM_SELF.  Nothing may crash, and no HDF5 object may be left
 * open.  (Files whose bytes are malformed below the HDF5 API are the
 * probe's: ckpt_probe.c parses them first in a child process, and
 * tests/ckpt_fuzz.sh mutates them through the binary.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_internal.h"

struct src {
    const uint8_t *p;
    size_t n;
};

static unsigned u8(struct src *s)
{
    if (!s->n)
        return 0;
    s->n--;
    return *s->p++;
}

static uint64_t u64(struct src *s)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u8(s);
    return v;
}

/* A string: the right one (good) or bytes from the input. */
static void str(struct src *s, const char *good, char *buf, size_t cap)
{
    if (u8(s) % 2) {
        snprintf(buf, cap, "%s", good);
        return;
    }
    size_t len = u8(s) % (cap - 1);
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)u8(s);
    buf[len] = '\0';
}

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static uint8_t good[4096];
    setenv("OMPI_MCA_ess_singleton_isolated", "1", 1);
    /* keep Open MPI's components loaded, so that LeakSanitizer can name
     * (and tests/sanitizer/lsan.supp suppress) what they keep */
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    MPI_Init(argc, argv);
    devnull = fopen("/dev/null", "w");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* no limit on HDF5's free lists: its per-file blocks (the metadata
     * cache is megabytes) are reused for the next input, not returned */
    H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
    /* one read of a good file first: Open MPI and HDF5 allocate what they
     * keep for the process (components, caches) on their first use, which
     * the per-input leak check would take for a leak of ours */
    memset(good, 1, sizeof good);
    LLVMFuzzerTestOneInput(good, sizeof good);
    return 0;
}

static void attr(hid_t obj, const char *name, struct src *s,
                 const char *good_str, int64_t good_int)
{
    char buf[256];
    hsize_t dims[2] = {1 + u8(s) % 3, 1 + u8(s) % 3};
    hid_t sp = -1, t = -1, a = -1;
    unsigned kind = u8(s) % 8;
    union { int64_t i; uint64_t u; double d; } v;
    const char *vs = buf;
    int64_t arr[9] = {0};

    v.i = u8(s) % 2 ? good_int : (int64_t)u64(s);
    switch (kind) {
    case 0:
        return; /* absent */
    case 1: t = H5Tcopy(H5T_STD_I64LE); break;
    case 2: t = H5Tcopy(H5T_STD_U64LE); break;
    case 3: t = H5Tcopy(H5T_IEEE_F64LE); v.d = (double)v.i; break;
    case 4: case 7:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        break;
    case 5:
        t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, 1 + u8(s) % 64);
        break;
    case 6: t = H5Tcopy(H5T_STD_I32LE); break;
    }
    str(s, good_str, buf, sizeof buf);
    sp = kind == 6 || kind == 7 ? H5Screate_simple(2, dims, NULL)
                                : H5Screate(H5S_SCALAR);
    a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        if (kind == 4)
            H5Awrite(a, t, &vs);
        else if (kind == 7) {
            const char *many[9] = {buf, buf, buf, buf, buf, buf, buf, buf,
                                   buf};
            H5Awrite(a, t, many);
        } else if (kind == 5) {
            char fixed[65] = "";
            snprintf(fixed, sizeof fixed, "%s", buf);
            H5Awrite(a, t, fixed);
        } else if (kind == 6)
            H5Awrite(a, H5T_NATIVE_INT64, arr);
        else
            H5Awrite(a, t, &v);
        H5Aclose(a);
    }
    H5Sclose(sp);
    H5Tclose(t);
}

static void dataset(hid_t fid, const char *name, struct src *s)
{
    hsize_t dims[4] = {2, 3, 1, 1}, chunk[4] = {1, 1, 1, 1};
    int nd = u8(s) % 3 ? 2 : (int)(u8(s) % 5);
    if (u8(s) % 2)
        for (int d = 0; d < nd; d++)
            dims[d] = u8(s) % 5;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    unsigned lay = u8(s) % 3;
    int empty = 0;
    for (int d = 0; d < nd; d++)
        empty |= dims[d] == 0;
    if (lay == 1 && nd > 0 && !empty)
        H5Pset_chunk(dcpl, nd, chunk);
    else if (lay == 2)
        H5Pset_layout(dcpl, H5D_COMPACT);
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    unsigned ty = u8(s) % 4;
    hid_t type = ty == 0 ? H5T_IEEE_F32LE : ty == 1 ? H5T_IEEE_F64LE
                 : ty == 2 ? H5T_STD_I32LE : H5T_IEEE_F32BE;
    hid_t d = H5Dcreate2(fid, name, type, sp, lcpl, dcpl, H5P_DEFAULT);
    if (d >= 0) {
        float data[256]; /* up to 4 dimensions of up to 4 */
        for (int i = 0; i < 81; i++) {
            uint32_t b = (uint32_t)u64(s);
            memcpy(&data[i], &b, sizeof b);
        }
        for (int i = 81; i < 256; i++)
            data[i] = data[i % 81];
        if (u8(s) % 2)
            H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                     data);
        attr(d, u8(s) % 4 ? "xxh64" : "xxh6", s, "",
             (int64_t)ckpt_checksum_pieces(NULL, 0));
        H5Dclose(d);
    }
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
}

/* Build the described file in memory; its image in *img (malloc'ed). */
static size_t build(struct src *s, void **img)
{
    static const char *const names[] = {"format", "version", "step",
        "tokens_seen", "config", "layout", "data_cursor", "rng_seed",
        "complete"};
    static const char *const good_s[] = {CKPT_FORMAT, "", "", "",
        "[model]\nn_layer = 1\n", "dp=1 tp=1 pp=1 world=1", "", "", ""};
    static const int64_t good_i[] = {0, CKPT_VERSION, 1, 6, 0, 0, 1, 7, 1};
    char extra[64];
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 12, 0);
    hid_t fid = H5Fcreate("build.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (fid < 0)
        return 0;
    for (int i = 0; i < 9; i++)
        attr(fid, names[i], s, good_s[i], good_i[i]);
    dataset(fid, "/model/w", s);
    dataset(fid, "/optim/m/w", s);
    for (unsigned k = u8(s) % 3; k > 0; k--) {
        str(s, "/model/h.0.attn.wq", extra, sizeof extra);
        if (extra[0] == '/' && !strstr(extra, "//") &&
            extra[strlen(extra) - 1] != '/')
            dataset(fid, extra, s);
    }
    H5Fflush(fid, H5F_SCOPE_GLOBAL);
    ssize_t size = H5Fget_file_image(fid, NULL, 0);
    *img = size > 0 ? malloc((size_t)size) : NULL;
    if (*img && H5Fget_file_image(fid, *img, (size_t)size) != size)
        size = 0;
    H5Fclose(fid);
    return size > 0 ? (size_t)size : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[CKPT_ERRMAX];
    struct src s = {data, size};
    struct ckpt_meta meta;
    void *img = NULL;
    size_t n = build(&s, &img);
    float w[6], m[6];
    struct ckpt_tensor t[2] = {
        {"/model/w", 2, {2, 3}, {0, 0}, {2, 3}, w, 0, 0},
        {"/optim/m/w", 2, {2, 3}, {0, 0}, {2, 3}, m, 0, 0},
    };
    if (!n) {
        free(img);
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 12, 0);
    H5Pset_file_image(fapl, img, n);
    hid_t fid = H5Fopen("read.h5", H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    free(img);
    if (fid >= 0) {
        memset(&meta, 0, sizeof meta);
        if (ckpt_root_check(fid, "read.h5", &meta, err) == 0)
            free(meta.config_text);
        ckpt_info_fid(fid, "read.h5", devnull, err);
        ckpt_read_fid(MPI_COMM_SELF, fid, "read.h5", t, 2, NULL, err);
        if (H5Fget_obj_count(fid, H5F_OBJ_ALL | H5F_OBJ_LOCAL) != 1)
            abort(); /* an object left open on some path */
        H5Fclose(fid);
    }
    H5Eclear2(H5E_DEFAULT);
    /* HDF5 keeps freed blocks on its free lists for the next file (its
     * metadata cache alone is megabytes): emptying them after every input
     * made each open fault in fresh pages (with the free-list limit lifted
     * below: 177 -> 470 inputs/s); they are reachable,
     * so the leak check at exit does not count them */
    return 0;
}
