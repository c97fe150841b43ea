/* test_gguf.c — runs the GGUF reader over every file of a corpus directory.
 *
 *   edge_test_gguf DIR            expectations from the names: ok_* must open, bad_* must not
 *   edge_test_gguf --any DIR...   no expectations (fuzzer output): each file opens or fails cleanly
 *
 * A file that opens has every accessor exercised on it (every metadata entry and string, every typed
 * getter, every tensor and every byte of its data, the name lookups, the range errors). A file that
 * does not must fail with EDGE_ERR_FORMAT and a message that starts with the path and gives a byte
 * position. Without --any, other names are ignored. Exit status 0 when every file behaves; built with
 * -DEDGE_SANITIZE=ON it doubles as the AddressSanitizer/UBSan run of the reader. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

static int g_failures = 0;

#define EXPECT(cond, ...)                                                                                          \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                   \
            fprintf(stderr, __VA_ARGS__);                                                                          \
            fprintf(stderr, "\n");                                                                                 \
            g_failures++;                                                                                          \
        }                                                                                                          \
    } while (0)

static size_t value_size(int type) {
    switch (type) {
    case EDGE_GGUF_UINT8: case EDGE_GGUF_INT8: case EDGE_GGUF_BOOL: return 1;
    case EDGE_GGUF_UINT16: case EDGE_GGUF_INT16: return 2;
    case EDGE_GGUF_UINT32: case EDGE_GGUF_INT32: case EDGE_GGUF_FLOAT32: return 4;
    case EDGE_GGUF_UINT64: case EDGE_GGUF_INT64: case EDGE_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* A checksum over bytes, so that reads cannot be optimized away. */
static uint64_t mix(uint64_t h, const void *p, uint64_t n) {
    const unsigned char *b = p;
    for (uint64_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The mapping's extent, recovered from a tensor (data = base + data_offset + offset); every pointer the
 * API hands out must lie inside it. Unknown (no tensors): the checks are skipped. */
typedef struct {
    const char *base;
    uint64_t size;
} extent;

static int inside(extent m, const void *p, uint64_t n) {
    if (!m.base) return 1;
    const char *c = p;
    return c >= m.base && (uint64_t)(c - m.base) <= m.size && n <= m.size - (uint64_t)(c - m.base);
}

/* Every accessor on a file that opened. */
static uint64_t exercise(const char *path, edge_gguf *g) {
    uint64_t h = 1469598103934665603ull;
    uint32_t version;
    int64_t n_kv, n_tensors;
    uint64_t alignment, data_offset, file_size;
    EXPECT(edge_gguf_header(g, &version, &n_kv, &n_tensors, &alignment, &data_offset, &file_size) == EDGE_OK,
           "%s: header", path);
    EXPECT(version == 2 || version == 3, "%s: version %u", path, (unsigned)version);
    EXPECT(alignment > 0 && (alignment & (alignment - 1)) == 0, "%s: alignment %llu", path,
           (unsigned long long)alignment);
    EXPECT(strcmp(edge_gguf_path(g), path) == 0, "%s: path", path);
    extent map = {NULL, file_size};
    edge_gguf_tensor_info first;
    if (n_tensors > 0 && edge_gguf_tensor(g, 0, &first) == EDGE_OK)
        map.base = (const char *)first.data - data_offset - first.offset;

    char name[512];
    for (int64_t i = 0; i < n_kv; i++) {
        const char *key;
        uint64_t key_len, n;
        int type, elem_type;
        const void *data;
        if (edge_gguf_kv(g, i, &key, &key_len, &type, &elem_type, &n, &data) != EDGE_OK) {
            EXPECT(0, "%s: kv %lld: %s", path, (long long)i, edge_last_error());
            continue;
        }
        EXPECT(inside(map, key, key_len), "%s: key %lld outside the mapping", path, (long long)i);
        h = mix(h, key, key_len);
        if (type == EDGE_GGUF_STRING || (type == EDGE_GGUF_ARRAY && elem_type == EDGE_GGUF_STRING)) {
            for (uint64_t j = 0; j < n; j++) {
                const char *s;
                uint64_t len;
                EXPECT(edge_gguf_kv_string(g, i, j, &s, &len) == EDGE_OK, "%s: string %lld/%llu", path,
                       (long long)i, (unsigned long long)j);
                EXPECT(inside(map, s, len), "%s: string %lld/%llu outside the mapping", path, (long long)i,
                       (unsigned long long)j);
                h = mix(h, s, len);
            }
            EXPECT(edge_gguf_kv_string(g, i, n, NULL, NULL) == EDGE_ERR_RANGE, "%s: string past the end", path);
        } else {
            int et = type == EDGE_GGUF_ARRAY ? elem_type : type;
            EXPECT(type == EDGE_GGUF_ARRAY || elem_type == -1, "%s: scalar elem_type", path);
            EXPECT(value_size(et) > 0, "%s: kv %lld element type %d", path, (long long)i, et);
            EXPECT(inside(map, data, n * value_size(et)), "%s: value %lld outside the mapping", path, (long long)i);
            h = mix(h, data, n * value_size(et));
            EXPECT(edge_gguf_kv_string(g, i, 0, NULL, NULL) == EDGE_ERR_INVALID_ARG, "%s: not a string", path);
        }
        /* Lookups by name round-trip (keys with an embedded NUL cannot be looked up as C strings). */
        if (key_len < sizeof name && memchr(key, 0, key_len) == NULL) {
            memcpy(name, key, key_len);
            name[key_len] = '\0';
            int64_t found;
            EXPECT(edge_gguf_find_key(g, name, &found) == EDGE_OK && found == i, "%s: find_key '%s'", path, name);
            int64_t iv;
            double fv;
            const char *sv;
            uint64_t sl;
            edge_status si = edge_gguf_get_int(g, name, &iv);
            edge_status sf = edge_gguf_get_float(g, name, &fv);
            edge_status ss = edge_gguf_get_str(g, name, &sv, &sl);
            int is_int = type <= EDGE_GGUF_INT32 && type != EDGE_GGUF_FLOAT32;
            is_int = is_int || type == EDGE_GGUF_INT64;
            EXPECT(!is_int || si == EDGE_OK, "%s: get_int '%s'", path, name);
            EXPECT(type != EDGE_GGUF_STRING || ss == EDGE_OK, "%s: get_str '%s'", path, name);
            EXPECT(type == EDGE_GGUF_STRING || ss == EDGE_ERR_FORMAT, "%s: get_str on non-string '%s'", path, name);
            EXPECT(type != EDGE_GGUF_ARRAY || (si == EDGE_ERR_FORMAT && sf == EDGE_ERR_FORMAT),
                   "%s: typed getters on array '%s'", path, name);
            if (si == EDGE_OK) h = mix(h, &iv, sizeof iv);
        }
    }
    EXPECT(edge_gguf_kv(g, n_kv, NULL, NULL, NULL, NULL, NULL, NULL) == EDGE_ERR_RANGE, "%s: kv past the end", path);
    EXPECT(edge_gguf_kv(g, -1, NULL, NULL, NULL, NULL, NULL, NULL) == EDGE_ERR_RANGE, "%s: kv -1", path);

    for (int64_t i = 0; i < n_tensors; i++) {
        edge_gguf_tensor_info t;
        if (edge_gguf_tensor(g, i, &t) != EDGE_OK) {
            EXPECT(0, "%s: tensor %lld: %s", path, (long long)i, edge_last_error());
            continue;
        }
        EXPECT(t.n_dims >= 1 && t.n_dims <= 4, "%s: n_dims", path);
        const unsigned char *begin = (const unsigned char *)t.data;
        EXPECT(t.offset % alignment == 0, "%s: tensor offset alignment", path);
        EXPECT(data_offset + t.offset + t.nbytes <= file_size, "%s: tensor inside the file", path);
        EXPECT(inside(map, t.data, t.nbytes) && inside(map, t.name, t.name_len), "%s: tensor %lld outside", path,
               (long long)i);
        h = mix(h, begin, t.nbytes); /* every byte: ASan/the MMU catch a read past the mapping */
        if (t.name_len < sizeof name && memchr(t.name, 0, t.name_len) == NULL) {
            memcpy(name, t.name, t.name_len);
            name[t.name_len] = '\0';
            int64_t found;
            EXPECT(edge_gguf_find_tensor(g, name, &found) == EDGE_OK && found == i, "%s: find_tensor '%s'", path,
                   name);
        }
    }
    edge_gguf_tensor_info t;
    EXPECT(edge_gguf_tensor(g, n_tensors, &t) == EDGE_ERR_RANGE, "%s: tensor past the end", path);
    int64_t idx = 0;
    EXPECT(edge_gguf_find_tensor(g, "no such tensor", &idx) == EDGE_OK && idx == -1, "%s: absent tensor", path);
    EXPECT(edge_gguf_find_key(g, "no such key", &idx) == EDGE_OK && idx == -1, "%s: absent key", path);
    int64_t iv;
    EXPECT(edge_gguf_get_int(g, "no such key", &iv) == EDGE_ERR_FORMAT && strstr(edge_last_error(), "missing"),
           "%s: missing key message", path);
    return h;
}

static int has_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Open one file; `expect` is 1 (must open), 0 (must fail cleanly) or -1 (either). */
static void check_file(const char *path, int expect, int *n_ok, int *n_bad, uint64_t *checksum) {
    edge_gguf *g = NULL;
    edge_status st = edge_gguf_open(path, &g);
    if (st == EDGE_OK) {
        (*n_ok)++;
        EXPECT(expect != 0, "%s should fail to open", path);
        EXPECT(g != NULL, "%s: no handle", path);
        if (g) *checksum ^= exercise(path, g);
    } else {
        (*n_bad)++;
        const char *msg = edge_last_error();
        EXPECT(expect != 1, "%s should open: %s", path, msg);
        EXPECT(st == EDGE_ERR_FORMAT && g == NULL, "%s should fail with EDGE_ERR_FORMAT, got %s: %s", path,
               edge_status_name(st), msg);
        EXPECT(has_prefix(msg, path) && strstr(msg, "(at byte ") != NULL, "%s: message '%s'", path, msg);
        if (expect == 0) printf("%s\n", msg);
    }
    edge_gguf_close(g);
}

static int check_dir(const char *dir_path, int any, int *n_ok, int *n_bad, uint64_t *checksum) {
    DIR *dir = opendir(dir_path);
    if (!dir) {
        perror(dir_path);
        return -1;
    }
    char path[4096];
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int expect = has_prefix(e->d_name, "ok_") ? 1 : has_prefix(e->d_name, "bad_") ? 0 : -1;
        if (expect < 0 && !any) continue;
        if (any) expect = -1;
        snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name);
        check_file(path, expect, n_ok, n_bad, checksum);
    }
    closedir(dir);
    return 0;
}

int main(int argc, char **argv) {
    int any = argc >= 2 && strcmp(argv[1], "--any") == 0;
    if (argc < 2 + any || (!any && argc != 2)) {
        fprintf(stderr, "usage: %s CORPUS_DIR | --any DIR...\n", argv[0]);
        return 2;
    }
    edge_gguf_close(NULL); /* a no-op */
    edge_gguf *g = NULL;
    EXPECT(edge_gguf_open("/nonexistent/file.gguf", &g) == EDGE_ERR_IO && g == NULL, "missing file");

    int n_ok = 0, n_bad = 0;
    uint64_t checksum = 0;
    for (int a = 1 + any; a < argc; a++)
        if (check_dir(argv[a], any, &n_ok, &n_bad, &checksum) != 0) return 2;
    printf("%d valid and %d malformed files checked (checksum %016llx), %d failures\n", n_ok, n_bad,
           (unsigned long long)checksum, g_failures);
    return g_failures == 0 && n_ok + n_bad > 0 ? 0 : 1;
}
