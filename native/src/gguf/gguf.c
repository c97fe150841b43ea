/* gguf.c — the GGUF reader: memory-maps a GGUF v2/v3 file read-only and validates it completely at
 * open, so that no accessor can read outside the mapping.
 *
 * Layout (little-endian, packed, no alignment except the data section):
 *   header       magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   metadata     n_kv × { string key | u32 value_type | value }
 *                  string = u64 length + bytes (no NUL); array = u32 elem_type | u64 count | count × elem
 *   tensor infos n_tensors × { string name | u32 n_dims | n_dims × u64 ne | u32 type | u64 offset }
 *   padding      to general.alignment (u32, default 32)
 *   data         each tensor at data_offset + offset (offset a multiple of the alignment)
 *
 * Every length and count read from the file is checked against the bytes left before it is used,
 * with overflow-checked arithmetic, and every failure names the file, the object and the byte
 * position: "<path>: <problem> (at byte N)". */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blocks.h"
#include "common.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

enum {
    GGUF_DEFAULT_ALIGNMENT = 32,
    GGUF_MAX_DIMS = 4,
    GGUF_HEADER_BYTES = 24,
    /* Smallest possible encodings, used to bound lying counts before allocating anything:
     * a metadata entry is at least key length (8) + value type (4) + a 1-byte value; a tensor info
     * at least name length (8) + n_dims (4) + one dimension (8) + type (4) + offset (8). */
    GGUF_MIN_KV_BYTES = 13,
    GGUF_MIN_TENSOR_INFO_BYTES = 32,
};

typedef struct gguf_kv {
    const char *key; /* into the mapping, not NUL-terminated */
    uint64_t key_len;
    uint64_t key_pos;   /* byte position of the key's length prefix */
    int type;           /* edge_gguf_value_type */
    int elem_type;      /* arrays: element type; scalars: -1 */
    uint64_t n;         /* arrays: element count; scalars: 1 */
    uint64_t value_pos; /* first byte of the value (arrays: of the first element; strings: the length prefix) */
    uint64_t *str_pos;  /* string arrays: position of each element's length prefix (n entries) */
} gguf_kv;

struct edge_gguf {
    char *path;
    const uint8_t *map; /* NULL for an empty file */
    uint64_t size;
    uint32_t version;
    int64_t n_kv, n_tensors;
    uint64_t alignment, data_offset;
    gguf_kv *kvs; /* grown while parsing (never sized by a count from the file alone); kv_cap zeroed slots */
    uint64_t kv_cap;
    edge_gguf_tensor_info *tensors;
    uint64_t tensor_cap;
    int64_t *key_index; /* open-addressing hash tables of entry indices, -1 = empty */
    uint64_t key_index_cap;
    int64_t *tensor_index;
    uint64_t tensor_index_cap;
};

/* ---------------------------------------------------------------- value types */

static const char *const k_value_type_names[] = {"UINT8", "INT8",   "UINT16", "INT16",  "UINT32",
                                                 "INT32", "FLOAT32", "BOOL",  "STRING", "ARRAY",
                                                 "UINT64", "INT64", "FLOAT64"};

static bool value_type_valid(uint32_t t) { return t <= EDGE_GGUF_FLOAT64; }

static const char *value_type_name(int t) {
    return (t >= 0 && t <= EDGE_GGUF_FLOAT64) ? k_value_type_names[t] : "?";
}

/* Bytes of one scalar of a fixed-size type; 0 for STRING and ARRAY. */
static uint64_t value_type_size(int t) {
    switch (t) {
    case EDGE_GGUF_UINT8: case EDGE_GGUF_INT8: case EDGE_GGUF_BOOL: return 1;
    case EDGE_GGUF_UINT16: case EDGE_GGUF_INT16: return 2;
    case EDGE_GGUF_UINT32: case EDGE_GGUF_INT32: case EDGE_GGUF_FLOAT32: return 4;
    case EDGE_GGUF_UINT64: case EDGE_GGUF_INT64: case EDGE_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- error messages */

/* A printable excerpt of a name from the file (which may hold any bytes), for messages. */
typedef struct { char s[72]; } shown_name;

static shown_name show(const char *p, uint64_t len) {
    shown_name out;
    uint64_t n = len < 64 ? len : 61;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        out.s[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > n) {
        memcpy(out.s + n, "...", 3);
        n += 3;
    }
    out.s[n] = '\0';
    return out;
}

/* edge_fail(EDGE_ERR_FORMAT, "<path>: <problem> (at byte <at>)"). */
static edge_status EDGE_PRINTF(3, 4) fail_at(const char *path, uint64_t at, const char *fmt, ...) {
    char problem[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    return edge_fail(EDGE_ERR_FORMAT, "%s: %s (at byte %llu)", path, problem, (unsigned long long)at);
}

/* ---------------------------------------------------------------- bounded reads */

typedef struct cursor {
    const uint8_t *base;
    uint64_t size, pos; /* invariant: pos <= size */
    const char *path;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

/* Read n bytes describing `what`; on truncation, a message naming it. */
static edge_status read_bytes(cursor *c, void *dst, uint64_t n, const char *what) {
    if (n > left(c))
        return fail_at(c->path, c->pos, "file ends inside %s: %llu bytes needed, %llu left", what,
                       (unsigned long long)n, (unsigned long long)left(c));
    memcpy(dst, c->base + c->pos, n);
    c->pos += n;
    return EDGE_OK;
}

static edge_status read_u32(cursor *c, uint32_t *v, const char *what) { return read_bytes(c, v, 4, what); }
static edge_status read_u64(cursor *c, uint64_t *v, const char *what) { return read_bytes(c, v, 8, what); }

/* A GGUF string: u64 length, then that many bytes (checked against the file before use). */
static edge_status read_string(cursor *c, const char **s, uint64_t *len, const char *what) {
    uint64_t at = c->pos;
    edge_status st = read_u64(c, len, what);
    if (st) return st;
    if (*len > left(c))
        return fail_at(c->path, at, "length %llu of %s exceeds the %llu bytes left in the file",
                       (unsigned long long)*len, what, (unsigned long long)left(c));
    *s = (const char *)(c->base + c->pos);
    c->pos += *len;
    return EDGE_OK;
}

/* ---------------------------------------------------------------- name index (FNV-1a, open addressing) */

static uint64_t hash_bytes(const char *s, uint64_t len) {
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t index_capacity(int64_t n) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap *= 2; /* n is bounded by the file size / 13, no overflow */
    return cap;
}

typedef const char *(*name_of_fn)(const edge_gguf *g, int64_t i, uint64_t *len);

static const char *kv_name(const edge_gguf *g, int64_t i, uint64_t *len) {
    *len = g->kvs[i].key_len;
    return g->kvs[i].key;
}

static const char *tensor_name(const edge_gguf *g, int64_t i, uint64_t *len) {
    *len = g->tensors[i].name_len;
    return g->tensors[i].name;
}

static int64_t index_lookup(const edge_gguf *g, const int64_t *table, uint64_t cap, name_of_fn name_of,
                            const char *s, uint64_t len) {
    if (!table) return -1;
    for (uint64_t slot = hash_bytes(s, len) & (cap - 1);; slot = (slot + 1) & (cap - 1)) {
        int64_t i = table[slot];
        if (i < 0) return -1;
        uint64_t n;
        const char *name = name_of(g, i, &n);
        if (n == len && memcmp(name, s, len) == 0) return i;
    }
}

/* Build a table over n names; on a duplicate, dup_first and dup_second receive its two indices. */
static edge_status index_build(const edge_gguf *g, int64_t n, name_of_fn name_of, int64_t **table_out,
                               uint64_t *cap_out, int64_t *dup_first, int64_t *dup_second) {
    uint64_t cap = index_capacity(n);
    int64_t *table = malloc(cap * sizeof *table);
    if (!table) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for a name index", g->path);
    for (uint64_t k = 0; k < cap; k++) table[k] = -1;
    *dup_first = *dup_second = -1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t len;
        const char *s = name_of(g, i, &len);
        uint64_t slot = hash_bytes(s, len) & (cap - 1);
        for (; table[slot] >= 0; slot = (slot + 1) & (cap - 1)) {
            uint64_t n2;
            const char *s2 = name_of(g, table[slot], &n2);
            if (n2 == len && memcmp(s, s2, len) == 0) {
                *dup_first = table[slot];
                *dup_second = i;
                break;
            }
        }
        if (*dup_second >= 0) break;
        table[slot] = i;
    }
    *table_out = table;
    *cap_out = cap;
    return EDGE_OK;
}

/* ---------------------------------------------------------------- parsing */

/* Make room for `need` elements of `elem` bytes in *arr (capacity *cap, new slots zeroed), doubling.
 * Arrays grow with what was actually parsed, so memory stays proportional to the bytes read even when
 * a count in the file lies (the counts are also bounded by the file size before parsing starts). */
/* Returns the array (possibly moved), or NULL when out of memory (then `arr` is still the caller's). */
static void *grow(void *arr, uint64_t *cap, uint64_t need, size_t elem) {
    if (need <= *cap) return arr;
    uint64_t new_cap = *cap ? *cap : 64;
    while (new_cap < need) new_cap *= 2;
    uint64_t bytes;
    if (!edge_mul_u64(new_cap, elem, &bytes) || bytes > SIZE_MAX) return NULL;
    char *p = realloc(arr, (size_t)bytes);
    if (!p) return NULL;
    memset(p + *cap * elem, 0, (size_t)((new_cap - *cap) * elem));
    *cap = new_cap;
    return p;
}

static edge_status parse_header(edge_gguf *g, cursor *c) {
    char magic[4] = {0};
    edge_status st = read_bytes(c, magic, 4, "the magic");
    if (st) return st;
    if (memcmp(magic, "GGUF", 4) != 0) {
        shown_name m = show(magic, 4);
        return fail_at(g->path, 0, "not a GGUF file: magic is '%s', expected 'GGUF'", m.s);
    }
    if ((st = read_u32(c, &g->version, "the version"))) return st;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        return fail_at(g->path, 4, "big-endian GGUF v%u files are not supported", (unsigned)(g->version >> 24));
    if (g->version == 1) return fail_at(g->path, 4, "GGUF version 1 is not supported (only versions 2 and 3)");
    if (g->version != 2 && g->version != 3)
        return fail_at(g->path, 4, "unknown GGUF version %u (supported: 2 and 3)", (unsigned)g->version);
    uint64_t n_tensors = 0, n_kv = 0;
    if ((st = read_u64(c, &n_tensors, "the tensor count"))) return st;
    if ((st = read_u64(c, &n_kv, "the metadata count"))) return st;
    /* Lying counts are caught here, before any allocation is sized by them. */
    if (n_kv > left(c) / GGUF_MIN_KV_BYTES)
        return fail_at(g->path, 16,
                       "metadata count %llu needs at least %d bytes per entry, more than the %llu bytes left in "
                       "the file (a truncated file or a corrupt count)",
                       (unsigned long long)n_kv, GGUF_MIN_KV_BYTES, (unsigned long long)left(c));
    if (n_tensors > left(c) / GGUF_MIN_TENSOR_INFO_BYTES)
        return fail_at(g->path, 8,
                       "tensor count %llu needs at least %d bytes per tensor, more than the %llu bytes left in "
                       "the file (a truncated file or a corrupt count)",
                       (unsigned long long)n_tensors, GGUF_MIN_TENSOR_INFO_BYTES, (unsigned long long)left(c));
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return EDGE_OK;
}

static edge_status parse_kv(edge_gguf *g, cursor *c, int64_t i) {
    gguf_kv *kv = &g->kvs[i];
    char what[128];
    snprintf(what, sizeof what, "the key of metadata entry %lld", (long long)i);
    kv->key_pos = c->pos;
    edge_status st = read_string(c, &kv->key, &kv->key_len, what);
    if (st) return st;
    if (kv->key_len == 0) return fail_at(g->path, kv->key_pos, "metadata entry %lld has an empty key", (long long)i);
    shown_name key = show(kv->key, kv->key_len);

    uint64_t type_pos = c->pos;
    uint32_t type = 0;
    snprintf(what, sizeof what, "the value type of metadata '%s'", key.s);
    if ((st = read_u32(c, &type, what))) return st;
    if (!value_type_valid(type))
        return fail_at(g->path, type_pos, "metadata '%s' has unknown value type %u", key.s, (unsigned)type);
    kv->type = (int)type;
    kv->elem_type = -1;
    kv->n = 1;

    if (type == EDGE_GGUF_ARRAY) {
        uint64_t elem_pos = c->pos;
        uint32_t elem = 0;
        snprintf(what, sizeof what, "the element type of metadata array '%s'", key.s);
        if ((st = read_u32(c, &elem, what))) return st;
        if (elem == EDGE_GGUF_ARRAY)
            return fail_at(g->path, elem_pos, "metadata '%s' is an array of arrays (nested arrays are not supported)",
                           key.s);
        if (!value_type_valid(elem))
            return fail_at(g->path, elem_pos, "metadata array '%s' has unknown element type %u", key.s,
                           (unsigned)elem);
        kv->elem_type = (int)elem;
        uint64_t count_pos = c->pos;
        snprintf(what, sizeof what, "the length of metadata array '%s'", key.s);
        if ((st = read_u64(c, &kv->n, what))) return st;
        kv->value_pos = c->pos;
        if (elem == EDGE_GGUF_STRING) {
            /* Each element takes at least its 8-byte length: bound the count before allocating. */
            if (kv->n > left(c) / 8)
                return fail_at(g->path, count_pos,
                               "metadata string array '%s' claims %llu elements, more than the %llu bytes left "
                               "in the file can hold",
                               key.s, (unsigned long long)kv->n, (unsigned long long)left(c));
            uint64_t str_cap = 0;
            for (uint64_t j = 0; j < kv->n; j++) {
                uint64_t *str_pos = grow(kv->str_pos, &str_cap, j + 1, sizeof *str_pos);
                if (!str_pos)
                    return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory indexing metadata array '%s'", g->path,
                                     key.s);
                kv->str_pos = str_pos;
                kv->str_pos[j] = c->pos;
                const char *s;
                uint64_t len;
                snprintf(what, sizeof what, "element %llu of metadata array '%s'", (unsigned long long)j, key.s);
                if ((st = read_string(c, &s, &len, what))) return st;
            }
        } else {
            uint64_t bytes;
            if (!edge_mul_u64(kv->n, value_type_size((int)elem), &bytes) || bytes > left(c))
                return fail_at(g->path, count_pos,
                               "metadata array '%s' claims %llu %s elements, more than the %llu bytes left in the "
                               "file",
                               key.s, (unsigned long long)kv->n, value_type_name((int)elem),
                               (unsigned long long)left(c));
            c->pos += bytes;
        }
        return EDGE_OK;
    }

    kv->value_pos = c->pos;
    if (type == EDGE_GGUF_STRING) {
        const char *s;
        uint64_t len;
        snprintf(what, sizeof what, "the value of metadata '%s'", key.s);
        return read_string(c, &s, &len, what);
    }
    uint64_t size = value_type_size((int)type);
    if (size > left(c))
        return fail_at(g->path, c->pos, "file ends inside the value of metadata '%s': %llu bytes needed, %llu left",
                       key.s, (unsigned long long)size, (unsigned long long)left(c));
    c->pos += size;
    return EDGE_OK;
}

static edge_status parse_alignment(edge_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = index_lookup(g, g->key_index, g->key_index_cap, kv_name, "general.alignment", 17);
    if (i < 0) return EDGE_OK;
    const gguf_kv *kv = &g->kvs[i];
    if (kv->type != EDGE_GGUF_UINT32)
        return fail_at(g->path, kv->key_pos, "general.alignment must be a UINT32, found %s",
                       value_type_name(kv->type));
    uint32_t a;
    memcpy(&a, g->map + kv->value_pos, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return fail_at(g->path, kv->value_pos, "general.alignment %u is not a nonzero power of two", (unsigned)a);
    g->alignment = a;
    return EDGE_OK;
}

static edge_status parse_tensor_info(edge_gguf *g, cursor *c, int64_t i, uint64_t *offset_pos) {
    edge_gguf_tensor_info *t = &g->tensors[i];
    char what[128];
    snprintf(what, sizeof what, "the name of tensor %lld", (long long)i);
    uint64_t name_pos = c->pos;
    edge_status st = read_string(c, &t->name, &t->name_len, what);
    if (st) return st;
    if (t->name_len == 0) return fail_at(g->path, name_pos, "tensor %lld has an empty name", (long long)i);
    shown_name name = show(t->name, t->name_len);

    uint64_t dims_pos = c->pos;
    uint32_t n_dims = 0;
    snprintf(what, sizeof what, "the dimension count of tensor '%s'", name.s);
    if ((st = read_u32(c, &n_dims, what))) return st;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fail_at(g->path, dims_pos, "tensor '%s' has %u dimensions, expected 1 to %d", name.s,
                       (unsigned)n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne_pos = c->pos, ne = 0;
        snprintf(what, sizeof what, "dimension %u of tensor '%s'", (unsigned)d, name.s);
        if ((st = read_u64(c, &ne, what))) return st;
        if (ne == 0) return fail_at(g->path, ne_pos, "dimension %u of tensor '%s' is 0", (unsigned)d, name.s);
        if (!edge_mul_u64(n_elems, ne, &n_elems) || n_elems > (uint64_t)INT64_MAX)
            return fail_at(g->path, ne_pos, "the element count of tensor '%s' overflows int64 at dimension %u (%llu)",
                           name.s, (unsigned)d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
    }

    uint64_t type_pos = c->pos;
    uint32_t type = 0;
    snprintf(what, sizeof what, "the type of tensor '%s'", name.s);
    if ((st = read_u32(c, &type, what))) return st;
    const edge_type_traits *traits = type <= (uint32_t)INT32_MAX ? edge_type_traits_get((int)type) : NULL;
    if (!traits) return fail_at(g->path, type_pos, "tensor '%s' has unknown type %u", name.s, (unsigned)type);
    t->type = (int)type;
    if (t->ne[0] % traits->block_elems != 0)
        return fail_at(g->path, dims_pos, "tensor '%s' has rows of %lld elements, not a multiple of the %s block size %lld",
                       name.s, (long long)t->ne[0], traits->name, (long long)traits->block_elems);
    uint64_t nbytes = (uint64_t)(t->ne[0] / traits->block_elems);
    bool ok = edge_mul_u64(nbytes, (uint64_t)traits->block_bytes, &nbytes);
    for (int d = 1; d < GGUF_MAX_DIMS && ok; d++) ok = edge_mul_u64(nbytes, (uint64_t)t->ne[d], &nbytes);
    if (!ok) return fail_at(g->path, dims_pos, "the byte size of tensor '%s' (%s) overflows", name.s, traits->name);
    t->nbytes = nbytes;

    *offset_pos = c->pos;
    snprintf(what, sizeof what, "the data offset of tensor '%s'", name.s);
    if ((st = read_u64(c, &t->offset, what))) return st;
    if (t->offset % g->alignment != 0)
        return fail_at(g->path, *offset_pos, "tensor '%s' data offset %llu is not a multiple of the alignment %llu",
                       name.s, (unsigned long long)t->offset, (unsigned long long)g->alignment);
    return EDGE_OK;
}

static edge_status parse(edge_gguf *g) {
    cursor c = {g->map, g->size, 0, g->path};
    edge_status st = parse_header(g, &c);
    if (st) return st;

    for (int64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kvs = grow(g->kvs, &g->kv_cap, (uint64_t)i + 1, sizeof *kvs);
        if (!kvs) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for %lld metadata entries", g->path, (long long)i);
        g->kvs = kvs;
        if ((st = parse_kv(g, &c, i))) return st;
    }

    int64_t dup_a, dup_b;
    if ((st = index_build(g, g->n_kv, kv_name, &g->key_index, &g->key_index_cap, &dup_a, &dup_b))) return st;
    if (dup_b >= 0) {
        shown_name key = show(g->kvs[dup_b].key, g->kvs[dup_b].key_len);
        return fail_at(g->path, g->kvs[dup_b].key_pos, "duplicate metadata key '%s' (entries %lld and %lld)", key.s,
                       (long long)dup_a, (long long)dup_b);
    }
    if ((st = parse_alignment(g))) return st;

    /* The tensor count was bounded against the whole file at the header; bound it again against
     * what is left after the metadata, still before allocating. */
    if ((uint64_t)g->n_tensors > left(&c) / GGUF_MIN_TENSOR_INFO_BYTES)
        return fail_at(g->path, 8,
                       "tensor count %lld needs at least %d bytes per tensor, more than the %llu bytes left after "
                       "the metadata (a truncated file or a corrupt count)",
                       (long long)g->n_tensors, GGUF_MIN_TENSOR_INFO_BYTES, (unsigned long long)left(&c));
    uint64_t *offset_pos = NULL, offset_cap = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        edge_gguf_tensor_info *tensors = grow(g->tensors, &g->tensor_cap, (uint64_t)i + 1, sizeof *tensors);
        if (tensors) g->tensors = tensors;
        uint64_t *positions = tensors ? grow(offset_pos, &offset_cap, (uint64_t)i + 1, sizeof *positions) : NULL;
        if (positions) offset_pos = positions;
        if (!tensors || !positions) {
            free(offset_pos);
            return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for %lld tensor infos", g->path, (long long)i);
        }
        if ((st = parse_tensor_info(g, &c, i, &offset_pos[i]))) {
            free(offset_pos);
            return st;
        }
    }

    /* The data section starts at the first multiple of the alignment after the tensor infos. */
    uint64_t data_offset;
    if (!edge_add_u64(c.pos, g->alignment - 1, &data_offset)) {
        free(offset_pos);
        return fail_at(g->path, c.pos, "the data section offset overflows");
    }
    g->data_offset = data_offset - data_offset % g->alignment;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        edge_gguf_tensor_info *t = &g->tensors[i];
        uint64_t begin, end;
        if (!edge_add_u64(g->data_offset, t->offset, &begin) || !edge_add_u64(begin, t->nbytes, &end) ||
            end > g->size) {
            shown_name name = show(t->name, t->name_len);
            st = fail_at(g->path, offset_pos[i],
                         "tensor '%s' data (offset %llu + %llu bytes in the data section at byte %llu) "
                         "ends past the end of the file (%llu bytes)",
                         name.s, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                         (unsigned long long)g->data_offset, (unsigned long long)g->size);
            free(offset_pos);
            return st;
        }
        t->data = g->map + begin;
    }

    if ((st = index_build(g, g->n_tensors, tensor_name, &g->tensor_index, &g->tensor_index_cap, &dup_a, &dup_b))) {
        free(offset_pos);
        return st;
    }
    if (dup_b >= 0) {
        shown_name name = show(g->tensors[dup_b].name, g->tensors[dup_b].name_len);
        /* The name's length prefix sits 8 bytes before its bytes. */
        uint64_t at = (uint64_t)((const uint8_t *)g->tensors[dup_b].name - g->map) - 8;
        st = fail_at(g->path, at, "duplicate tensor name '%s' (tensors %lld and %lld)", name.s, (long long)dup_a,
                     (long long)dup_b);
        free(offset_pos);
        return st;
    }
    free(offset_pos);
    return EDGE_OK;
}

/* ---------------------------------------------------------------- open / close */

EDGE_API void edge_gguf_close(edge_gguf *g) {
    if (!g) return;
    if (g->map) munmap((void *)g->map, (size_t)g->size);
    for (uint64_t i = 0; i < g->kv_cap; i++) free(g->kvs[i].str_pos);
    free(g->kvs);
    free(g->tensors);
    free(g->key_index);
    free(g->tensor_index);
    free(g->path);
    free(g);
}

/* The file read-only, at a 2 MiB-aligned address with MADV_HUGEPAGE (Linux): every decoded token streams
 * the weights once, and where the page cache holds the file in 2 MiB folios (it reads it in such folios
 * through this mapping) one TLB entry then covers 2 MiB instead of 4 KiB. Advice only: without THP the
 * mapping is an ordinary one. MAP_FAILED on failure (errno set). */
static void *map_weights(int fd, size_t size) {
    const size_t huge = (size_t)2 << 20;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (size >= huge) {
        char *res = mmap(NULL, size + huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (res != MAP_FAILED) {
            char *at = (char *)(((uintptr_t)res + huge - 1) & ~(uintptr_t)(huge - 1));
            const size_t page = (size_t)sysconf(_SC_PAGESIZE);
            const size_t span = (size + page - 1) / page * page;
            void *map = mmap(at, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
            if (map == MAP_FAILED) {
                const int err = errno;
                munmap(res, size + huge);
                errno = err;
                return MAP_FAILED;
            }
            /* the reservation around the mapping */
            if (at > res) munmap(res, (size_t)(at - res));
            if (res + size + huge > at + span) munmap(at + span, (size_t)(res + size + huge - (at + span)));
            (void)madvise(map, size, MADV_HUGEPAGE);
            return map;
        }
    }
#else
    (void)huge;
#endif
    return mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
}

EDGE_API edge_status edge_gguf_open(const char *path, edge_gguf **out) {
    if (!path || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_open: path and out must not be NULL");
    *out = NULL;
    edge_gguf *g = calloc(1, sizeof *g);
    char *path_copy = strdup(path);
    if (!g || !path_copy) {
        free(g);
        free(path_copy);
        return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory", path);
    }
    g->path = path_copy;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        edge_status st = edge_fail(EDGE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        edge_gguf_close(g);
        return st;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        edge_status st = edge_fail(EDGE_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        edge_gguf_close(g);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        edge_gguf_close(g);
        return edge_fail(EDGE_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        edge_gguf_close(g);
        return edge_fail(EDGE_ERR_IO, "%s: file too large to map on this system", path);
    }
    g->size = (uint64_t)sb.st_size;
    if (g->size > 0) {
        void *map = map_weights(fd, (size_t)g->size);
        if (map == MAP_FAILED) {
            edge_status st = edge_fail(EDGE_ERR_IO, "%s: cannot mmap %llu bytes: %s", path,
                                       (unsigned long long)g->size, strerror(errno));
            close(fd);
            edge_gguf_close(g);
            return st;
        }
        g->map = map;
    }
    close(fd); /* the mapping stays valid */

    edge_status st = parse(g);
    if (st) {
        edge_gguf_close(g);
        return st;
    }
    *out = g;
    edge_clear_error();
    return EDGE_OK;
}

/* ---------------------------------------------------------------- accessors */

#define CHECK_HANDLE(g, fn)                                                                                        \
    do {                                                                                                           \
        if (!(g)) return edge_fail(EDGE_ERR_INVALID_ARG, fn ": gguf is NULL");                                     \
    } while (0)

EDGE_API const char *edge_gguf_path(const edge_gguf *g) { return g ? g->path : ""; }

EDGE_API edge_status edge_gguf_header(const edge_gguf *g, uint32_t *version, int64_t *n_kv, int64_t *n_tensors,
                                      uint64_t *alignment, uint64_t *data_offset, uint64_t *file_size) {
    CHECK_HANDLE(g, "edge_gguf_header");
    if (version) *version = g->version;
    if (n_kv) *n_kv = g->n_kv;
    if (n_tensors) *n_tensors = g->n_tensors;
    if (alignment) *alignment = g->alignment;
    if (data_offset) *data_offset = g->data_offset;
    if (file_size) *file_size = g->size;
    return EDGE_OK;
}

static edge_status kv_at(const edge_gguf *g, int64_t i, const gguf_kv **kv) {
    if (i < 0 || i >= g->n_kv)
        return edge_fail(EDGE_ERR_RANGE, "%s: metadata index %lld out of range (%lld entries)", g->path,
                         (long long)i, (long long)g->n_kv);
    *kv = &g->kvs[i];
    return EDGE_OK;
}

EDGE_API edge_status edge_gguf_kv(const edge_gguf *g, int64_t i, const char **key, uint64_t *key_len, int *type,
                                  int *elem_type, uint64_t *n, const void **data) {
    CHECK_HANDLE(g, "edge_gguf_kv");
    const gguf_kv *kv = NULL;
    edge_status st = kv_at(g, i, &kv);
    if (st) return st;
    if (key) *key = kv->key;
    if (key_len) *key_len = kv->key_len;
    if (type) *type = kv->type;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    if (data) {
        if (kv->type == EDGE_GGUF_STRING)
            *data = g->map + kv->value_pos + 8;
        else if (kv->type == EDGE_GGUF_ARRAY && kv->elem_type == EDGE_GGUF_STRING)
            *data = NULL;
        else
            *data = g->map + kv->value_pos;
    }
    return EDGE_OK;
}

static void string_at(const edge_gguf *g, uint64_t pos, const char **s, uint64_t *len) {
    uint64_t n;
    memcpy(&n, g->map + pos, 8);
    if (s) *s = (const char *)(g->map + pos + 8);
    if (len) *len = n;
}

EDGE_API edge_status edge_gguf_kv_string(const edge_gguf *g, int64_t i, uint64_t j, const char **s, uint64_t *len) {
    CHECK_HANDLE(g, "edge_gguf_kv_string");
    const gguf_kv *kv = NULL;
    edge_status st = kv_at(g, i, &kv);
    if (st) return st;
    shown_name key = show(kv->key, kv->key_len);
    if (kv->type == EDGE_GGUF_STRING) {
        if (j != 0)
            return edge_fail(EDGE_ERR_RANGE, "%s: metadata '%s' is a single string, element %llu requested", g->path,
                             key.s, (unsigned long long)j);
        string_at(g, kv->value_pos, s, len);
        return EDGE_OK;
    }
    if (kv->type == EDGE_GGUF_ARRAY && kv->elem_type == EDGE_GGUF_STRING) {
        if (j >= kv->n)
            return edge_fail(EDGE_ERR_RANGE, "%s: element %llu of metadata array '%s' out of range (%llu elements)",
                             g->path, (unsigned long long)j, key.s, (unsigned long long)kv->n);
        string_at(g, kv->str_pos[j], s, len);
        return EDGE_OK;
    }
    return edge_fail(EDGE_ERR_INVALID_ARG, "%s: metadata '%s' is not a string or string array (%s)", g->path, key.s,
                     value_type_name(kv->type));
}

EDGE_API edge_status edge_gguf_find_key(const edge_gguf *g, const char *key, int64_t *index) {
    CHECK_HANDLE(g, "edge_gguf_find_key");
    if (!key || !index) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_find_key: key and index must not be NULL");
    *index = index_lookup(g, g->key_index, g->key_index_cap, kv_name, key, strlen(key));
    return EDGE_OK;
}

EDGE_API edge_status edge_gguf_find_tensor(const edge_gguf *g, const char *name, int64_t *index) {
    CHECK_HANDLE(g, "edge_gguf_find_tensor");
    if (!name || !index)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_find_tensor: name and index must not be NULL");
    *index = index_lookup(g, g->tensor_index, g->tensor_index_cap, tensor_name, name, strlen(name));
    return EDGE_OK;
}

static edge_status find_required(const edge_gguf *g, const char *key, const gguf_kv **kv) {
    if (!key) return edge_fail(EDGE_ERR_INVALID_ARG, "%s: metadata key is NULL", g->path);
    int64_t i = index_lookup(g, g->key_index, g->key_index_cap, kv_name, key, strlen(key));
    if (i < 0) return edge_fail(EDGE_ERR_FORMAT, "%s: metadata key '%s' is missing", g->path, key);
    *kv = &g->kvs[i];
    return EDGE_OK;
}

/* A scalar integer (or bool) value as int64; false if it is not one or does not fit. */
static bool kv_int(const edge_gguf *g, const gguf_kv *kv, int64_t *out, bool *range_error) {
    const uint8_t *p = g->map + kv->value_pos;
    *range_error = false;
    switch (kv->type) {
    case EDGE_GGUF_UINT8: { uint8_t v; memcpy(&v, p, 1); *out = v; return true; }
    case EDGE_GGUF_INT8: { int8_t v; memcpy(&v, p, 1); *out = v; return true; }
    case EDGE_GGUF_BOOL: { uint8_t v; memcpy(&v, p, 1); *out = v != 0; return true; }
    case EDGE_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case EDGE_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); *out = v; return true; }
    case EDGE_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case EDGE_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); *out = v; return true; }
    case EDGE_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); *out = v; return true; }
    case EDGE_GGUF_UINT64: {
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > (uint64_t)INT64_MAX) {
            *range_error = true;
            return false;
        }
        *out = (int64_t)v;
        return true;
    }
    default: return false;
    }
}

EDGE_API edge_status edge_gguf_get_int(const edge_gguf *g, const char *key, int64_t *out) {
    CHECK_HANDLE(g, "edge_gguf_get_int");
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_get_int: out is NULL");
    const gguf_kv *kv = NULL;
    edge_status st = find_required(g, key, &kv);
    if (st) return st;
    bool range_error;
    if (kv_int(g, kv, out, &range_error)) return EDGE_OK;
    if (range_error) return edge_fail(EDGE_ERR_FORMAT, "%s: metadata '%s' does not fit in int64", g->path, key);
    return edge_fail(EDGE_ERR_FORMAT, "%s: metadata '%s' is %s, expected an integer", g->path, key,
                     value_type_name(kv->type));
}

EDGE_API edge_status edge_gguf_get_float(const edge_gguf *g, const char *key, double *out) {
    CHECK_HANDLE(g, "edge_gguf_get_float");
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_get_float: out is NULL");
    const gguf_kv *kv = NULL;
    edge_status st = find_required(g, key, &kv);
    if (st) return st;
    const uint8_t *p = g->map + kv->value_pos;
    if (kv->type == EDGE_GGUF_FLOAT32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return EDGE_OK;
    }
    if (kv->type == EDGE_GGUF_FLOAT64) {
        memcpy(out, p, 8);
        return EDGE_OK;
    }
    if (kv->type == EDGE_GGUF_UINT64) {
        uint64_t v;
        memcpy(&v, p, 8);
        *out = (double)v;
        return EDGE_OK;
    }
    int64_t v;
    bool range_error;
    if (kv->type != EDGE_GGUF_BOOL && kv_int(g, kv, &v, &range_error)) {
        *out = (double)v;
        return EDGE_OK;
    }
    return edge_fail(EDGE_ERR_FORMAT, "%s: metadata '%s' is %s, expected a number", g->path, key,
                     value_type_name(kv->type));
}

EDGE_API edge_status edge_gguf_get_str(const edge_gguf *g, const char *key, const char **s, uint64_t *len) {
    CHECK_HANDLE(g, "edge_gguf_get_str");
    const gguf_kv *kv = NULL;
    edge_status st = find_required(g, key, &kv);
    if (st) return st;
    if (kv->type != EDGE_GGUF_STRING)
        return edge_fail(EDGE_ERR_FORMAT, "%s: metadata '%s' is %s, expected a STRING", g->path, key,
                         value_type_name(kv->type));
    string_at(g, kv->value_pos, s, len);
    return EDGE_OK;
}

EDGE_API edge_status edge_gguf_tensor(const edge_gguf *g, int64_t i, edge_gguf_tensor_info *out) {
    CHECK_HANDLE(g, "edge_gguf_tensor");
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_gguf_tensor: out is NULL");
    if (i < 0 || i >= g->n_tensors)
        return edge_fail(EDGE_ERR_RANGE, "%s: tensor index %lld out of range (%lld tensors)", g->path, (long long)i,
                         (long long)g->n_tensors);
    *out = g->tensors[i];
    return EDGE_OK;
}
