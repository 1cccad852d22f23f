/*
 * mask2former._codec: the evaluation's two byte-level hot loops, in plain C.
 *
 *   encode_rle(masks, n, height, width) -> list of n str
 *       COCO compressed RLE strings ("counts") of n (height, width) row-major 0/1 masks,
 *       equal to pycocotools.mask.encode of the masks in Fortran order.
 *   encode_label_rle(labels, height, width) -> (list of int, list of str)
 *       The labels present in an (height, width) row-major uint8 label map, ascending, and
 *       the COCO RLE string of each label's mask.
 *   segment_pair_counts(gt_ids, pred_ids, gt_listed, pred_listed, out) -> None
 *       The panoptic intersection matrix: pixels per (ground-truth, predicted) segment pair.
 *   label_pair_counts(pred, gt, gt_columns, num_classes, out) -> int
 *       The semantic confusion matrix of two 8-bit label maps.
 *   png_unfilter(data, out, height, width, bpp[, out_bpp]) -> None
 *       Undoes the PNG row filters (None, Sub, Up, Average, Paeth) of an inflated,
 *       non-interlaced 8-bit image stream `data` (height rows of 1 + width * bpp bytes)
 *       into the writable buffer `out` (height * width * out_bpp bytes; out_bpp >= bpp,
 *       the extra bytes zero: RGB into 32-bit words).
 *   png_filter_sub(image, out, height, width, in_bpp, bpp) -> None
 *       The Sub-filtered PNG rows of the first bpp channels of an image.
 *
 * Only the CPython buffer protocol is used (no numpy or torch headers), so it builds
 * wherever setuptools compiles C; without it mask2former uses pycocotools / pyspng / OpenCV
 * for the same results. The loops run without the GIL.
 *
 * RLE: the column-major sequence of a row-major image changes value where a pixel differs
 * from the one above it, or at a column's top where it differs from the previous column's
 * bottom. Rows are compared with their predecessor 8 bytes at a time; the differing
 * positions (row-major order) are bucketed by column (a counting sort, which keeps each
 * column's rows ascending), which gives every change of the column-major sequence in order
 * without reading the image column by column.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ growable arrays */
/* A growable array of T named Name, with Name_push(&v, x) returning -1 when out of memory. */
#define DEFINE_VEC(Name, T)                                              \
    typedef struct {                                                     \
        T *data;                                                         \
        size_t size, capacity;                                           \
    } Name;                                                              \
    static int Name##_push(Name *v, T x) {                               \
        if (v->size == v->capacity) {                                    \
            size_t capacity = v->capacity ? 2 * v->capacity : 1024;      \
            T *data = realloc(v->data, capacity * sizeof(T));            \
            if (!data) return -1;                                        \
            v->data = data;                                              \
            v->capacity = capacity;                                      \
        }                                                                \
        v->data[v->size++] = x;                                          \
        return 0;                                                        \
    }

DEFINE_VEC(U32Vec, uint32_t)
DEFINE_VEC(U64Vec, uint64_t)

typedef struct {
    char *data;
    size_t size, capacity;
} CharVec;

static int char_reserve(CharVec *v, size_t extra) {
    if (v->size + extra <= v->capacity) return 0;
    size_t capacity = v->capacity ? v->capacity : 256;
    while (capacity < v->size + extra) capacity *= 2;
    char *data = realloc(v->data, capacity);
    if (!data) return -1;
    v->data = data;
    v->capacity = capacity;
    return 0;
}

/* ------------------------------------------------------------------ column changes */
/* The rows y >= 1 where pixel (y, x) differs from (y - 1, x), grouped by column x:
 * column x's rows are rows[start[x] .. start[x + 1]), ascending. */
typedef struct {
    U32Vec xs, ys;      /* differing positions in row-major order */
    uint32_t *start;    /* (width + 1,) */
    uint32_t *rows;     /* (number of differences,) */
} ColumnChanges;

static void changes_free(ColumnChanges *c) {
    free(c->xs.data);
    free(c->ys.data);
    free(c->start);
    free(c->rows);
    memset(c, 0, sizeof(*c));
}

static int changes_compute(ColumnChanges *c, const uint8_t *image, size_t height, size_t width) {
    c->xs.size = c->ys.size = 0;
    free(c->start);
    free(c->rows);
    c->rows = NULL;
    c->start = calloc(width + 1, sizeof(uint32_t));
    if (!c->start) return -1;
    for (size_t y = 1; y < height; y++) {
        const uint8_t *above = image + (y - 1) * width, *row = image + y * width;
        if (!memcmp(above, row, width)) continue; /* most rows: glibc's vectorised compare */
        size_t x = 0;
        for (; x + 8 <= width; x += 8) {
            uint64_t a, b;
            memcpy(&a, above + x, 8);
            memcpy(&b, row + x, 8);
            if (a == b) continue;
            for (size_t k = x; k < x + 8; k++) {
                if (above[k] != row[k]) {
                    if (U32Vec_push(&c->xs, (uint32_t)k) || U32Vec_push(&c->ys, (uint32_t)y))
                        return -1;
                    c->start[k + 1]++;
                }
            }
        }
        for (; x < width; x++) {
            if (above[x] != row[x]) {
                if (U32Vec_push(&c->xs, (uint32_t)x) || U32Vec_push(&c->ys, (uint32_t)y)) return -1;
                c->start[x + 1]++;
            }
        }
    }
    for (size_t x = 0; x < width; x++) c->start[x + 1] += c->start[x];
    c->rows = malloc((c->xs.size ? c->xs.size : 1) * sizeof(uint32_t));
    uint32_t *next = malloc((width ? width : 1) * sizeof(uint32_t));
    if (!c->rows || !next) {
        free(next);
        return -1;
    }
    memcpy(next, c->start, width * sizeof(uint32_t));
    for (size_t i = 0; i < c->xs.size; i++) c->rows[next[c->xs.data[i]]++] = c->ys.data[i];
    free(next);
    return 0;
}

/* ------------------------------------------------------------------ COCO RLE strings */
/* Appends the COCO compressed string of the runs between the change positions `changes`
 * (ascending, in [0, total)) of a sequence that starts with value 0 and has `total`
 * pixels: counts are the run lengths (the first may be 0), each written as the difference
 * to the count two before it (from the fourth on), 5 bits per character from '0' (48) with
 * bit 0x20 meaning "more follows" and 0x10 of the last character the sign. */
static int append_rle_string(CharVec *out, const uint64_t *changes, size_t n, uint64_t total) {
    int64_t before_last = 0, last = 0;
    for (size_t i = 0; i <= n; i++) {
        int64_t count = (int64_t)((i < n ? changes[i] : total) - (i ? changes[i - 1] : 0));
        int64_t x = i > 2 ? count - before_last : count;
        before_last = last;
        last = count;
        if (char_reserve(out, 14)) return -1;
        int more = 1;
        while (more) {
            char ch = (char)(x & 0x1f);
            x >>= 5; /* arithmetic shift: gcc, clang and MSVC keep the sign */
            more = (ch & 0x10) ? x != -1 : x != 0;
            if (more) ch |= 0x20;
            out->data[out->size++] = (char)(ch + 48);
        }
    }
    return 0;
}

/* The change positions of one (height, width) 0/1 mask's column-major sequence. */
static int mask_changes(U64Vec *out, ColumnChanges *c, const uint8_t *mask, size_t height,
                        size_t width) {
    out->size = 0;
    if (!height || !width) return 0;
    if (changes_compute(c, mask, height, width)) return -1;
    uint8_t previous = 0; /* the value before the column's top */
    for (size_t x = 0; x < width; x++) {
        if (mask[x] != previous && U64Vec_push(out, (uint64_t)x * height)) return -1;
        for (uint32_t i = c->start[x]; i < c->start[x + 1]; i++) {
            if (U64Vec_push(out, (uint64_t)x * height + c->rows[i])) return -1;
        }
        previous = mask[(height - 1) * width + x];
    }
    return 0;
}

static int check_shape(Py_buffer *buffer, Py_ssize_t count, Py_ssize_t height, Py_ssize_t width,
                       const char *what) {
    if (count < 0 || height < 0 || width < 0) {
        PyErr_Format(PyExc_ValueError, "%s: negative size", what);
        return -1;
    }
    if ((uint64_t)height * (uint64_t)width >= ((uint64_t)1 << 32)) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %zd x %zd pixels exceed COCO RLE's 32-bit counts", what, height, width);
        return -1;
    }
    if (buffer->len != count * height * width) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes is not %zd x %zd x %zd", what,
                     buffer->len, count, height, width);
        return -1;
    }
    return 0;
}

/* n strings from the concatenated `text`, string i being text[ends[i - 1] .. ends[i]). */
static PyObject *string_list(const CharVec *text, const size_t *ends, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t begin = i ? ends[i - 1] : 0;
        Py_ssize_t length = (Py_ssize_t)(ends[i] - begin);
        PyObject *s = PyUnicode_DecodeASCII(text->data + begin, length, NULL);
        if (!s) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, s);
    }
    return list;
}

static PyObject *encode_rle(PyObject *self, PyObject *args) {
    Py_buffer masks;
    Py_ssize_t n, height, width;
    if (!PyArg_ParseTuple(args, "y*nnn", &masks, &n, &height, &width)) return NULL;
    PyObject *result = NULL;
    CharVec text = {0};
    U64Vec changes = {0};
    ColumnChanges columns = {0};
    size_t *ends = malloc((n ? (size_t)n : 1) * sizeof(size_t));
    if (check_shape(&masks, n, height, width, "encode_rle")) goto done;
    if (!ends) {
        PyErr_NoMemory();
        goto done;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *pixels = masks.buf;
    uint64_t total = (uint64_t)height * width;
    for (Py_ssize_t k = 0; k < n && !failed; k++) {
        failed = mask_changes(&changes, &columns, pixels + k * total, height, width) ||
                 append_rle_string(&text, changes.data, changes.size, total);
        ends[k] = text.size;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    result = string_list(&text, ends, (size_t)n);
done:
    free(ends);
    free(text.data);
    free(changes.data);
    changes_free(&columns);
    PyBuffer_Release(&masks);
    return result;
}

/* ------------------------------------------------------------------ label maps */
/* Every label's change positions, in one pass: where the column-major sequence goes from
 * label a to label b, a's mask ends and b's begins. */
static int label_changes(U64Vec per_label[256], ColumnChanges *c, const uint8_t *labels,
                         size_t height, size_t width) {
    if (changes_compute(c, labels, height, width)) return -1;
    int previous = -1; /* no label before the first pixel */
    for (size_t x = 0; x < width; x++) {
        uint64_t top = (uint64_t)x * height;
        if (labels[x] != previous) {
            if (previous >= 0 && U64Vec_push(&per_label[previous], top)) return -1;
            if (U64Vec_push(&per_label[labels[x]], top)) return -1;
        }
        for (uint32_t i = c->start[x]; i < c->start[x + 1]; i++) {
            uint32_t y = c->rows[i];
            uint8_t from = labels[(y - 1) * width + x], to = labels[y * width + x];
            if (U64Vec_push(&per_label[from], top + y) || U64Vec_push(&per_label[to], top + y))
                return -1;
        }
        previous = labels[(height - 1) * width + x];
    }
    return 0;
}

static PyObject *encode_label_rle(PyObject *self, PyObject *args) {
    Py_buffer labels;
    Py_ssize_t height, width;
    if (!PyArg_ParseTuple(args, "y*nn", &labels, &height, &width)) return NULL;
    PyObject *present = NULL, *strings = NULL, *result = NULL;
    U64Vec per_label[256];
    memset(per_label, 0, sizeof(per_label));
    ColumnChanges columns = {0};
    CharVec text = {0};
    size_t ends[256], count = 0;
    int ids[256];
    if (check_shape(&labels, 1, height, width, "encode_label_rle")) goto done;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    uint64_t total = (uint64_t)height * width;
    if (total) failed = label_changes(per_label, &columns, labels.buf, height, width);
    for (int label = 0; label < 256 && !failed; label++) {
        if (!per_label[label].size) continue;
        /* a label's own sequence starts at 0 too: a change at position 0 means it starts
         * with a run of ones, as in encode_rle */
        failed = append_rle_string(&text, per_label[label].data, per_label[label].size, total);
        ids[count] = label;
        ends[count++] = text.size;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    present = PyList_New((Py_ssize_t)count);
    if (!present) goto done;
    for (size_t i = 0; i < count; i++) {
        PyObject *id = PyLong_FromLong(ids[i]);
        if (!id) goto done;
        PyList_SET_ITEM(present, (Py_ssize_t)i, id);
    }
    strings = string_list(&text, ends, count);
    if (strings) result = PyTuple_Pack(2, present, strings);
done:
    Py_XDECREF(present);
    Py_XDECREF(strings);
    for (int label = 0; label < 256; label++) free(per_label[label].data);
    changes_free(&columns);
    free(text.data);
    PyBuffer_Release(&labels);
    return result;
}

/* ------------------------------------------------------------------ PNG rows */
/* The Paeth predictor of the left (a), upper (b) and upper-left (c) bytes: the one nearest
 * to a + b - c, ties going to a, then b. Written without branches, which a compiler turns
 * into conditional moves: the choice is data-dependent and unpredictable. */
static inline int paeth(int a, int b, int c) {
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    int b_or_c = pb <= pc ? b : c;
    return (pa <= pb && pa <= pc) ? a : b_or_c;
}

/* Sub (1), Average (3) and Paeth (4) rows, pixel by pixel: each channel's left and
 * upper-left bytes are carried in locals (registers, once `bpp` is a constant and the
 * channel loop unrolled) instead of being read back from the row just written; before the
 * first pixel they are 0, which is the specification's rule for the first pixel. */
static inline void unfilter_left(int type, const uint8_t *line, const uint8_t *up, uint8_t *row,
                                 size_t width, const size_t bpp) {
    int left[8] = {0}, corner[8] = {0};
    for (size_t x = 0; x < width; x++) {
        for (size_t c = 0; c < bpp; c++) {
            size_t i = x * bpp + c;
            int above = up[i], predictor;
            if (type == 1) predictor = left[c];
            else if (type == 3) predictor = (left[c] + above) >> 1;
            else predictor = paeth(left[c], above, corner[c]);
            left[c] = row[i] = (uint8_t)(line[i] + predictor);
            corner[c] = above;
        }
    }
}

/* Undoes the filter `type` of one row: `line` the filtered bytes, `up` the unfiltered row
 * above (zeros for the first), `row` the output. Returns -1 for an unknown filter type. */
static int unfilter_row(int type, const uint8_t *line, const uint8_t *up, uint8_t *row,
                        size_t width, size_t bpp) {
    size_t stride = width * bpp;
    switch (type) {
        case 0: /* None */
            memcpy(row, line, stride);
            return 0;
        case 2: /* Up */
            for (size_t i = 0; i < stride; i++) row[i] = (uint8_t)(line[i] + up[i]);
            return 0;
        case 1: /* Sub */
        case 3: /* Average */
        case 4: /* Paeth */
            /* constant channel counts, so that each gets its own unrolled loop */
            if (bpp == 1) unfilter_left(type, line, up, row, width, 1);
            else if (bpp == 3) unfilter_left(type, line, up, row, width, 3);
            else if (bpp == 4) unfilter_left(type, line, up, row, width, 4);
            else unfilter_left(type, line, up, row, width, bpp);
            return 0;
        default:
            return -1;
    }
}

/* Unfilters every row into `out` (out_bpp >= bpp bytes per pixel, the extra ones zero).
 * `scratch` holds 3 * stride zero bytes: the row above the first, and two rows to unfilter
 * into when out_bpp != bpp. Returns -1 on success, else the first row whose filter type
 * is unknown. */
static Py_ssize_t unfilter_image(const uint8_t *in, uint8_t *out, size_t height, size_t width,
                                 size_t bpp, size_t out_bpp, uint8_t *scratch) {
    size_t stride = width * bpp;
    const uint8_t *up = scratch;
    uint8_t *rows[2] = {scratch + stride, scratch + 2 * stride};
    for (size_t y = 0; y < height; y++) {
        const uint8_t *line = in + y * (stride + 1);
        uint8_t *target = out + y * width * out_bpp;
        uint8_t *row = out_bpp == bpp ? target : rows[y % 2];
        if (unfilter_row(line[0], line + 1, up, row, width, bpp)) return (Py_ssize_t)y;
        if (bpp == 3 && out_bpp == 4) { /* RGB into 32-bit words: the common case */
            for (size_t x = 0; x < width; x++) {
                target[4 * x] = row[3 * x];
                target[4 * x + 1] = row[3 * x + 1];
                target[4 * x + 2] = row[3 * x + 2];
                target[4 * x + 3] = 0;
            }
        } else if (out_bpp != bpp) {
            for (size_t x = 0; x < width; x++)
                for (size_t c = 0; c < out_bpp; c++)
                    target[x * out_bpp + c] = c < bpp ? row[x * bpp + c] : 0;
        }
        up = row;
    }
    return -1;
}

static PyObject *png_unfilter(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    Py_ssize_t height, width, bpp, out_bpp = 0;
    if (!PyArg_ParseTuple(args, "y*w*nnn|n", &in, &out, &height, &width, &bpp, &out_bpp))
        return NULL;
    PyObject *result = NULL;
    if (out_bpp == 0) out_bpp = bpp;
    if (height < 0 || width < 0 || bpp < 1 || bpp > 8 || out_bpp < bpp || out_bpp > 8) {
        PyErr_Format(PyExc_ValueError, "png_unfilter: bad size %zd x %zd x %zd (out %zd)",
                     height, width, bpp, out_bpp);
        goto done;
    }
    size_t stride = (size_t)width * bpp;
    if ((size_t)in.len != height * (stride + 1)) {
        PyErr_Format(PyExc_ValueError,
                     "PNG image data inflates to %zd bytes, not the %zu of %zd rows of %zu",
                     in.len, height * (stride + 1), height, stride + 1);
        goto done;
    }
    if ((size_t)out.len != height * width * out_bpp) {
        PyErr_Format(PyExc_ValueError, "png_unfilter: output of %zd bytes, not %zu", out.len,
                     height * width * out_bpp);
        goto done;
    }
    uint8_t *scratch = calloc(3 * stride + 1, 1);
    if (!scratch) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t bad_row;
    Py_BEGIN_ALLOW_THREADS
    bad_row = unfilter_image(in.buf, out.buf, height, width, bpp, out_bpp, scratch);
    Py_END_ALLOW_THREADS
    free(scratch);
    if (bad_row >= 0) {
        PyErr_Format(PyExc_ValueError, "PNG row %zd has unknown filter type %d", bad_row,
                     ((const uint8_t *)in.buf)[bad_row * (stride + 1)]);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

/* png_filter_sub(image, out, height, width, in_bpp, bpp): the PNG rows of the first bpp
 * channels of an image of in_bpp bytes per pixel, each with the Sub filter (type 1): a byte
 * minus the same channel of the pixel to its left. out: height * (1 + width * bpp) bytes. */
static PyObject *png_filter_sub(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    Py_ssize_t height, width, in_bpp, bpp;
    if (!PyArg_ParseTuple(args, "y*w*nnnn", &in, &out, &height, &width, &in_bpp, &bpp))
        return NULL;
    PyObject *result = NULL;
    if (height < 0 || width < 0 || bpp < 1 || in_bpp < bpp || in.len != height * width * in_bpp ||
        out.len != height * (1 + width * bpp)) {
        PyErr_SetString(PyExc_ValueError, "png_filter_sub: bad buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *pixels = in.buf;
    uint8_t *rows = out.buf;
    for (Py_ssize_t y = 0; y < height; y++) {
        const uint8_t *src = pixels + y * width * in_bpp;
        uint8_t *dst = rows + y * (1 + width * bpp);
        *dst++ = 1;
        for (Py_ssize_t c = 0; c < bpp && width; c++) dst[c] = src[c];
        for (Py_ssize_t x = 1; x < width; x++)
            for (Py_ssize_t c = 0; c < bpp; c++)
                dst[x * bpp + c] = (uint8_t)(src[x * in_bpp + c] - src[(x - 1) * in_bpp + c]);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------ pixel pair counts */
/* Small open-addressing map from a listed segment id to its dense index. */
typedef struct {
    uint32_t *keys; /* ids, or EMPTY_KEY */
    uint32_t *values;
    uint32_t mask;
} IdMap;

#define EMPTY_KEY 0xFFFFFFFFu

static uint32_t id_hash(uint32_t id) { return (id * 2654435761u) >> 7; }

static int idmap_build(IdMap *map, const uint32_t *ids, size_t n, uint32_t first_value) {
    uint32_t size = 16;
    while (size < 2 * n + 2) size *= 2;
    map->keys = malloc(size * sizeof(uint32_t));
    map->values = malloc(size * sizeof(uint32_t));
    if (!map->keys || !map->values) return -1;
    memset(map->keys, 0xFF, size * sizeof(uint32_t));
    map->mask = size - 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = id_hash(ids[i]) & map->mask;
        while (map->keys[slot] != EMPTY_KEY && map->keys[slot] != ids[i])
            slot = (slot + 1) & map->mask;
        map->keys[slot] = ids[i];
        map->values[slot] = first_value + (uint32_t)i;
    }
    return 0;
}

/* The dense index of `id`, or 0 when it is not listed. */
static uint32_t idmap_find(const IdMap *map, uint32_t id) {
    uint32_t slot = id_hash(id) & map->mask;
    while (map->keys[slot] != EMPTY_KEY) {
        if (map->keys[slot] == id) return map->values[slot];
        slot = (slot + 1) & map->mask;
    }
    return 0;
}

static void idmap_free(IdMap *map) {
    free(map->keys);
    free(map->values);
}

/* segment_pair_counts(gt_ids, pred_ids, gt_listed, pred_listed, out):
 * gt_ids, pred_ids: uint32 id maps of the same number of pixels; gt_listed, pred_listed:
 * uint32 ids (0 must not be among them); out: int64 (2 + G) x (2 + P), zeroed, row-major.
 * out[i, j] += the pixels whose ground-truth id has dense index i and predicted id index j,
 * index 0 being an id not listed, 1 the id 0 (VOID), 2 + k the k-th listed id. */
static PyObject *segment_pair_counts(PyObject *self, PyObject *args) {
    Py_buffer gt, pred, gt_listed, pred_listed, out;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &gt, &pred, &gt_listed, &pred_listed, &out))
        return NULL;
    PyObject *result = NULL;
    IdMap gt_map = {0}, pred_map = {0};
    size_t n_gt = gt_listed.len / 4, n_pred = pred_listed.len / 4, columns = n_pred + 2;
    if (gt.len != pred.len || gt.len % 4 || gt_listed.len % 4 || pred_listed.len % 4) {
        PyErr_SetString(PyExc_ValueError, "segment_pair_counts: bad uint32 buffer sizes");
        goto done;
    }
    if ((size_t)out.len != (n_gt + 2) * columns * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "segment_pair_counts: output is not (2+G) x (2+P)");
        goto done;
    }
    if (idmap_build(&gt_map, gt_listed.buf, n_gt, 2) ||
        idmap_build(&pred_map, pred_listed.buf, n_pred, 2)) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const uint32_t *g = gt.buf, *p = pred.buf;
    int64_t *counts = out.buf;
    size_t pixels = gt.len / 4;
    uint32_t last_g = 0, last_p = 0, gi = 1, pj = 1; /* id 0 is VOID: index 1 */
    size_t i = 0;
    while (i < pixels) {
        /* a run of one (gt, predicted) pair is counted once: a per-pixel increment of the
         * same counter would wait on its own previous store */
        size_t run = i;
        while (run < pixels && g[run] == last_g && p[run] == last_p) run++;
        counts[gi * columns + pj] += (int64_t)(run - i);
        if (run == pixels) break;
        i = run;
        if (g[i] != last_g) {
            last_g = g[i];
            gi = last_g ? idmap_find(&gt_map, last_g) : 1;
        }
        if (p[i] != last_p) {
            last_p = p[i];
            pj = last_p ? idmap_find(&pred_map, last_p) : 1;
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    idmap_free(&gt_map);
    idmap_free(&pred_map);
    PyBuffer_Release(&gt);
    PyBuffer_Release(&pred);
    PyBuffer_Release(&gt_listed);
    PyBuffer_Release(&pred_listed);
    PyBuffer_Release(&out);
    return result;
}

/* label_pair_counts(pred, gt, gt_columns, num_classes, out) -> -1, or the first bad pixel:
 * pred, gt: uint8 label maps of the same size; gt_columns: uint16 (256,) column of each gt
 * label (0xFFFF: not allowed); out: int64 (K + 1) x (K + 1), zeroed; out[pred, column] += 1.
 * Stops at the first pixel whose prediction is >= num_classes or whose gt label is not
 * allowed and returns its position. */
static PyObject *label_pair_counts(PyObject *self, PyObject *args) {
    Py_buffer pred, gt, table, out;
    Py_ssize_t num_classes;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*", &pred, &gt, &table, &num_classes, &out))
        return NULL;
    PyObject *result = NULL;
    size_t n = (size_t)num_classes + 1;
    if (pred.len != gt.len || table.len != 256 * 2 || num_classes < 1 || num_classes > 256 ||
        (size_t)out.len != n * n * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "label_pair_counts: bad buffer sizes");
        goto done;
    }
    Py_ssize_t bad = -1;
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *pr = pred.buf, *gl = gt.buf;
    const uint16_t *columns = table.buf;
    int64_t *counts = out.buf;
    Py_ssize_t i = 0;
    while (i < pred.len) {
        uint8_t p = pr[i], g = gl[i];
        uint16_t column = columns[g];
        if (p >= num_classes || column > num_classes) {
            bad = i;
            break;
        }
        /* a run of one (prediction, gt) pair is counted once (see segment_pair_counts) */
        Py_ssize_t run = i + 1;
        while (run < pred.len && pr[run] == p && gl[run] == g) run++;
        counts[p * n + column] += run - i;
        i = run;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(bad);
done:
    PyBuffer_Release(&pred);
    PyBuffer_Release(&gt);
    PyBuffer_Release(&table);
    PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------ module */
static PyMethodDef methods[] = {
    {"encode_rle", encode_rle, METH_VARARGS,
     "encode_rle(masks, n, height, width) -> list of COCO RLE strings of n row-major 0/1 masks"},
    {"encode_label_rle", encode_label_rle, METH_VARARGS,
     "encode_label_rle(labels, height, width) -> (present labels, their COCO RLE strings)"},
    {"png_unfilter", png_unfilter, METH_VARARGS,
     "png_unfilter(data, out, height, width, bpp[, out_bpp]): undo the PNG row filters of "
     "8-bit data, writing out_bpp bytes per pixel (the extra ones zero)"},
    {"png_filter_sub", png_filter_sub, METH_VARARGS,
     "png_filter_sub(image, out, height, width, in_bpp, bpp): PNG rows with the Sub filter"},
    {"segment_pair_counts", segment_pair_counts, METH_VARARGS,
     "segment_pair_counts(gt_ids, pred_ids, gt_listed, pred_listed, out): pixel counts of "
     "(gt segment, predicted segment) pairs"},
    {"label_pair_counts", label_pair_counts, METH_VARARGS,
     "label_pair_counts(pred, gt, gt_columns, num_classes, out) -> -1 or the first bad pixel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_codec",
    "COCO RLE strings and PNG row unfiltering (see ops/codec/codec.c)", -1, methods,
};

PyMODINIT_FUNC PyInit__codec(void) { return PyModule_Create(&module); }
