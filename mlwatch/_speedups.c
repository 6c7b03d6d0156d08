/* mlwatch's per-call and per-value loops in C: the hot path's common call (record_plain), and the
   aggregator's reading of a batch (plain_calls; rows of dicts to numeric columns and string counts).

   In Python each value of a buffered call costs 60-90 ns to read out of its row, type-check and
   convert (a dict lookup, a list append, a type set, a float conversion, each a separate pass);
   here it is one pass of a few nanoseconds. Every function answers "not for me" (False / None)
   as soon as a value is not of the exact type it handles, and the caller falls back to the
   general Python path, which gives the same result: these functions decide nothing that path
   would decide differently. They never keep a borrowed reference across code that could run
   Python (a dict lookup may call a key's __eq__), and never raise for odd data.

   Optional at build time (setup.py marks the extension optional): without a compiler mlwatch
   installs and works, only slower (mlwatch._fast.AVAILABLE tells which).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* mlwatch/_http_tap.c: adds http_tap(send, receive, headers, cap) and its type to the module (0, or -1). */
int mlwatch_http_tap_init(PyObject *module);
/* Shared with it (defined below). */
int mlwatch_room_for_one(PyObject *runtime, PyObject *queue, Py_ssize_t *capacity, Py_ssize_t *batch);
PyObject *mlwatch_decline(void);

/* Integers up to 2**53 convert to float64 exactly: beyond that the general path decides. */
#define EXACT_INT_LIMIT (1LL << 53)

/* numpy.float64, a float subclass with float's layout, registered by mlwatch._fast (a strong
   reference for the process's life). */
static PyTypeObject *float64_type = NULL;

static inline int
as_double(PyObject *v, double *out)
{
    if (PyFloat_CheckExact(v) || (Py_TYPE(v) == float64_type)) {
        *out = PyFloat_AS_DOUBLE(v);
        return 1;
    }
    if (PyLong_CheckExact(v)) { /* exact: bool is a subclass and never taken here */
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || x > EXACT_INT_LIMIT || x < -EXACT_INT_LIMIT) {
            return 0;
        }
        *out = (double)x;
        return 1;
    }
    return 0;
}

/* A writable, C-contiguous float64 buffer of exactly n items (a numpy array from np.empty). */
static int
get_out(PyObject *out, Py_buffer *view, Py_ssize_t n)
{
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_OverflowError, "too many values");
        return -1;
    }
    if (PyObject_GetBuffer(out, view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    const char *f = view->format;
    int is_double = f != NULL && (strcmp(f, "d") == 0 || strcmp(f, "@d") == 0 || strcmp(f, "=d") == 0
#if PY_LITTLE_ENDIAN
                                  || strcmp(f, "<d") == 0
#else
                                  || strcmp(f, ">d") == 0
#endif
                                  );
    if (!is_double || view->itemsize != (Py_ssize_t)sizeof(double) || view->len != n * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "out must be a writable, contiguous float64 buffer with one item per value");
        return -1;
    }
    return 0;
}

/* The value of `key` in rows[i], a new reference; NULL when the row is not an exact dict, lacks the
   key, or the lookup raised. An Exception is cleared (the general path will meet it again); a
   BaseException such as KeyboardInterrupt stays set, for the caller to return NULL with. */
static PyObject *
row_value(PyObject *rows, Py_ssize_t i, PyObject *key)
{
    if (i >= PyList_GET_SIZE(rows)) { /* a key's __eq__ shrank the list */
        return NULL;
    }
    PyObject *row = PyList_GET_ITEM(rows, i);
    if (!PyDict_CheckExact(row)) {
        return NULL;
    }
    Py_INCREF(row);
    PyObject *v = PyDict_GetItemWithError(row, key);
    Py_XINCREF(v);
    Py_DECREF(row);
    if (v == NULL && PyErr_Occurred() && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear(); /* KeyboardInterrupt, SystemExit and the like stay raised */
    }
    return v;
}

PyDoc_STRVAR(fill_floats_doc,
"fill_floats(values, out) -> bool\n\n"
"Write float(v) for every item of the list or tuple `values` into the float64 buffer `out`. True\n"
"when every item is an exact float or an int of at most 2**53 in magnitude; False as soon as one\n"
"is not.");

static PyObject *
fill_floats(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fill_floats(values, out) takes 2 arguments");
        return NULL;
    }
    PyObject *values = args[0];
    if (!PyList_CheckExact(values) && !PyTuple_CheckExact(values)) {
        PyErr_SetString(PyExc_TypeError, "values must be a list or a tuple");
        return NULL;
    }
    /* The buffer first: getting it may run Python code (a __buffer__), which could change `values`.
       as_double runs none, so the items cannot change under the loop. */
    Py_buffer view;
    if (get_out(args[1], &view, PySequence_Fast_GET_SIZE(values)) < 0) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(values);
    PyObject **items = PySequence_Fast_ITEMS(values);
    if (view.len != n * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "out must be a writable, contiguous float64 buffer with one item per value");
        return NULL;
    }
    double *dst = (double *)view.buf;
    int ok = 1;
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        ok = as_double(items[i], &dst[i]);
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

/* Most fields of a buffered record that one call reads. */
#define MAX_ITEM_INDICES 16

/* The arguments (records: list, width: int, indices: tuple, ...) shared by the functions reading
   fields of buffered records: the width, with the indices left in `at`; -1 with an exception when
   the call is not `expect` such arguments or an index is not an int in [0, width). */
static Py_ssize_t
record_fields(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expect, const char *usage, Py_ssize_t *at)
{
    Py_ssize_t width = nargs == expect ? PyLong_AsSsize_t(args[1]) : -1;
    if (nargs != expect || !PyList_CheckExact(args[0]) || width < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, usage);
        }
        return -1;
    }
    PyObject *indices = args[2];
    if (!PyTuple_CheckExact(indices) || PyTuple_GET_SIZE(indices) > MAX_ITEM_INDICES) {
        PyErr_Format(PyExc_TypeError, "indices must be a tuple of at most %d ints", MAX_ITEM_INDICES);
        return -1;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(indices); j++) {
        at[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(indices, j));
        if (at[j] < 0 || at[j] >= width) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "an index is outside the records");
            }
            return -1;
        }
    }
    return width;
}

PyDoc_STRVAR(fill_item_floats_doc,
"fill_item_floats(records, width, indices, out) -> bool\n\n"
"Columns of buffered records: for the j-th of `indices` (a tuple of ints below `width`), write\n"
"float(record[index]) of every record of the list `records` to `out` (a float64 buffer of\n"
"len(indices) * len(records) items, column j at j * len(records)), None as NaN (missing, as the\n"
"profile counts a None). True when every record is an exact tuple of `width` items whose values\n"
"there are None, exact floats or ints of at most 2**53 in magnitude; False as soon as one is not.");

static PyObject *
fill_item_floats(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t at[MAX_ITEM_INDICES];
    Py_ssize_t width = record_fields(args, nargs, 4, "fill_item_floats(records: list, width: int, indices: tuple, out)", at);
    if (width < 0) {
        return NULL;
    }
    PyObject *records = args[0];
    Py_ssize_t m = PyTuple_GET_SIZE(args[2]), n = PyList_GET_SIZE(records);
    if (m && n > PY_SSIZE_T_MAX / m / (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_OverflowError, "too many values");
        return NULL;
    }
    /* The buffer first: getting it may run Python code. Nothing below runs any. */
    Py_buffer view;
    if (get_out(args[3], &view, n * m) < 0) {
        return NULL;
    }
    if (PyList_GET_SIZE(records) != n) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_RuntimeError, "records changed size");
        return NULL;
    }
    double *dst = (double *)view.buf;
    int ok = 1;
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        ok = PyTuple_CheckExact(rec) && PyTuple_GET_SIZE(rec) == width;
        for (Py_ssize_t j = 0; j < m && ok; j++) {
            PyObject *v = PyTuple_GET_ITEM(rec, at[j]);
            if (v == Py_None) {
                dst[j * n + i] = Py_NAN;
            }
            else {
                ok = as_double(v, &dst[j * n + i]);
            }
        }
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

PyDoc_STRVAR(same_items_doc,
"same_items(records, width, indices) -> bool\n\n"
"Whether every record of the list `records` is an exact tuple of `width` items holding, at each\n"
"of `indices`, what the first record holds there: the same object, or an equal exact str or\n"
"exact int. False otherwise (values of other types are not compared: the caller groups those).");

static PyObject *
same_items(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t at[MAX_ITEM_INDICES];
    Py_ssize_t width = record_fields(args, nargs, 3, "same_items(records: list, width: int, indices: tuple)", at);
    if (width < 0) {
        return NULL;
    }
    PyObject *records = args[0];
    Py_ssize_t m = PyTuple_GET_SIZE(args[2]), n = PyList_GET_SIZE(records);
    if (n == 0) {
        Py_RETURN_TRUE;
    }
    PyObject *first = PyList_GET_ITEM(records, 0);
    if (!PyTuple_CheckExact(first) || PyTuple_GET_SIZE(first) != width) {
        Py_RETURN_FALSE;
    }
    /* Comparing exact strs and ints runs no Python code: the list and tuples cannot change. */
    for (Py_ssize_t i = 1; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyTuple_CheckExact(rec) || PyTuple_GET_SIZE(rec) != width) {
            Py_RETURN_FALSE;
        }
        for (Py_ssize_t j = 0; j < m; j++) {
            PyObject *a = PyTuple_GET_ITEM(first, at[j]), *b = PyTuple_GET_ITEM(rec, at[j]);
            if (a == b) {
                continue;
            }
            int comparable = (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b)) || (PyLong_CheckExact(a) && PyLong_CheckExact(b));
            if (!comparable || PyObject_RichCompareBool(a, b, Py_EQ) != 1) {
                Py_RETURN_FALSE;
            }
        }
    }
    Py_RETURN_TRUE;
}

/* One column's reading state in columns_from_dicts. */
enum { COL_FLOATS = 1, COL_STRS = 2, COL_OTHER = 3 };

typedef struct {
    int state;
    PyObject *slots;   /* COL_STRS: {value: index into counts} (exact str keys only) */
    Py_ssize_t *counts;
    Py_ssize_t used, cap;
} column;

static void
column_drop_counts(column *c)
{
    Py_CLEAR(c->slots);
    PyMem_Free(c->counts);
    c->counts = NULL;
    c->used = c->cap = 0;
}

/* Count one str value; -1 with an exception set only when out of memory. */
static int
column_count(column *c, PyObject *v)
{
    PyObject *slot = PyDict_GetItemWithError(c->slots, v);
    if (slot != NULL) {
        c->counts[PyLong_AsSsize_t(slot)] += 1;
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (c->used == c->cap) {
        Py_ssize_t cap = c->cap ? 2 * c->cap : 16;
        Py_ssize_t *grown = PyMem_Realloc(c->counts, cap * sizeof(Py_ssize_t));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        c->counts = grown;
        c->cap = cap;
    }
    PyObject *index = PyLong_FromSsize_t(c->used);
    if (index == NULL || PyDict_SetItem(c->slots, v, index) < 0) {
        Py_XDECREF(index);
        return -1;
    }
    Py_DECREF(index);
    c->counts[c->used++] = 1;
    return 0;
}

static PyObject *
column_result(column *c)
{
    if (c->state == COL_FLOATS) {
        Py_RETURN_TRUE;
    }
    if (c->state != COL_STRS) {
        Py_RETURN_NONE;
    }
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *value, *slot;
    while (PyDict_Next(c->slots, &pos, &value, &slot)) {
        PyObject *n = PyLong_FromSsize_t(c->counts[PyLong_AsSsize_t(slot)]);
        if (n == NULL || PyDict_SetItem(result, value, n) < 0) {
            Py_XDECREF(n);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(n);
    }
    return result;
}

/* Where the first of `keys` sits among the first row's entries, for walking the rows laid out
   alike (copies of one dict: the same key objects in the same order); -1 when it is not there. */
static Py_ssize_t
key_offset(PyObject *rows, PyObject *first_key)
{
    if (PyList_GET_SIZE(rows) == 0 || !PyDict_CheckExact(PyList_GET_ITEM(rows, 0))) {
        return -1;
    }
    PyObject *row = PyList_GET_ITEM(rows, 0);
    Py_ssize_t pos = 0, at = 0;
    PyObject *k, *v;
    while (PyDict_Next(row, &pos, &k, &v)) { /* runs no Python code */
        if (k == first_key) {
            return at;
        }
        at++;
    }
    return -1;
}

/* Read row i's values of `keys` into the columns. Values are taken by walking the row's entries
   from `offset` while each entry's key is the very key object expected (no hashing, no lookup:
   most of the cost of a lookup), and looked up from the first entry that is not. -1 with an
   exception set on a BaseException or memory error. The row is held meanwhile: counting a
   string may allocate, and so run the garbage collector and any __del__. */
static int
read_row(PyObject *rows, Py_ssize_t i, PyObject *keys, Py_ssize_t offset, column *cols, double *dst, Py_ssize_t n,
         int count_strings, Py_ssize_t *live)
{
    Py_ssize_t width = PyTuple_GET_SIZE(keys), pos = 0;
    PyObject *row = NULL, *k, *found;
    int walk = 0;
    if (offset >= 0 && i < PyList_GET_SIZE(rows) && PyDict_CheckExact(PyList_GET_ITEM(rows, i))) {
        row = PyList_GET_ITEM(rows, i);
        Py_INCREF(row);
        walk = 1;
        for (Py_ssize_t s = 0; s < offset && walk; s++) {
            walk = PyDict_Next(row, &pos, &k, &found);
        }
    }
    int rc = 0;
    for (Py_ssize_t j = 0; j < width; j++) {
        column *c = &cols[j];
        PyObject *key = PyTuple_GET_ITEM(keys, j), *v = NULL;
        if (walk) {
            walk = PyDict_Next(row, &pos, &k, &found) && k == key;
            if (walk) {
                v = found;
                Py_INCREF(v);
            }
        }
        if (c->state == COL_OTHER) {
            Py_XDECREF(v);
            continue;
        }
        if (v == NULL) {
            v = row_value(rows, i, key);
            if (v == NULL && PyErr_Occurred()) {
                rc = -1;
                break;
            }
        }
        if (c->state == 0) { /* first row: what this column is to be */
            if (v != NULL && (PyFloat_CheckExact(v) || PyLong_CheckExact(v) || Py_TYPE(v) == float64_type)) {
                c->state = COL_FLOATS;
            }
            else if (v != NULL && count_strings && PyUnicode_CheckExact(v)) {
                c->state = COL_STRS;
                c->slots = PyDict_New();
                if (c->slots == NULL) {
                    Py_DECREF(v);
                    rc = -1;
                    break;
                }
            }
            else {
                c->state = COL_OTHER;
            }
        }
        int ok = v != NULL;
        if (ok && c->state == COL_FLOATS) {
            ok = as_double(v, &dst[j * n + i]);
        }
        else if (ok && c->state == COL_STRS) {
            ok = PyUnicode_CheckExact(v);
            if (ok && column_count(c, v) < 0) {
                Py_DECREF(v);
                rc = -1;
                break;
            }
        }
        Py_XDECREF(v);
        if (!ok && c->state != COL_OTHER) {
            c->state = COL_OTHER;
            column_drop_counts(c);
        }
        if (c->state == COL_OTHER) {
            *live -= 1;
        }
    }
    Py_XDECREF(row);
    return rc;
}

PyDoc_STRVAR(columns_from_dicts_doc,
"columns_from_dicts(rows, keys, out, count_strings[, pause, every]) -> list\n\n"
"Read the columns `keys` (a tuple) of the dicts in the list `rows` in one pass over the rows. A\n"
"column whose every value is an exact float or an int of at most 2**53 in magnitude is written\n"
"to `out` (a float64 buffer of len(keys) * len(rows) items, column j at j * len(rows)) and\n"
"answered True; with `count_strings`, a column of exact str values is answered with its counts\n"
"{value: count}; any other column (a value of another type, an absent key, a row that is not a\n"
"dict) is answered None, for the general path to read. What a column is to be is decided by its\n"
"first row. With `pause` (a callable) and `every`, pause() is called before every `every`-th row.");

static PyObject *
columns_from_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 && nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "columns_from_dicts(rows, keys, out, count_strings[, pause, every]) takes 4 or 6 arguments");
        return NULL;
    }
    PyObject *rows = args[0], *keys = args[1], *pause = nargs == 6 ? args[4] : Py_None;
    if (!PyList_CheckExact(rows) || !PyTuple_CheckExact(keys)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list and keys a tuple");
        return NULL;
    }
    Py_ssize_t every = 0;
    if (pause != Py_None) {
        every = PyLong_AsSsize_t(args[5]);
        if (every < 1) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "every must be a positive number of rows");
            }
            return NULL;
        }
    }
    int count_strings = PyObject_IsTrue(args[3]);
    if (count_strings < 0) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows), width = PyTuple_GET_SIZE(keys);
    if (width && n > PY_SSIZE_T_MAX / width / (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_OverflowError, "too many values");
        return NULL;
    }
    Py_buffer view;
    if (get_out(args[2], &view, n * width) < 0) {
        return NULL;
    }
    double *dst = (double *)view.buf;
    column *cols = PyMem_Calloc(width ? width : 1, sizeof(column));
    PyObject *result = NULL;
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t live = width; /* columns still being read here */
    Py_ssize_t offset = width ? key_offset(rows, PyTuple_GET_ITEM(keys, 0)) : -1;
    for (Py_ssize_t i = 0; i < n && live > 0; i++) {
        if (every && i && i % every == 0) {
            /* Other threads may run in `pause` (it offers them the GIL): nothing borrowed is held
               across it, the rows are re-read from the list, and `out` stays exported (fixed). */
            PyObject *r = PyObject_CallNoArgs(pause);
            if (r == NULL) {
                goto done;
            }
            Py_DECREF(r);
        }
        if (read_row(rows, i, keys, offset, cols, dst, n, count_strings, &live) < 0) {
            goto done;
        }
    }
    result = PyList_New(width);
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t j = 0; j < width; j++) {
        PyObject *item = column_result(&cols[j]);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, j, item);
    }
done:
    if (cols != NULL) {
        for (Py_ssize_t j = 0; j < width; j++) {
            column_drop_counts(&cols[j]);
        }
        PyMem_Free(cols);
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(all_row_dicts_doc,
"all_row_dicts(values, scalar_types) -> bool\n\n"
"True when every item of the list `values` is an exact dict whose first value's type (None's for\n"
"an empty dict) is in the frozenset `scalar_types`: each is one row of features, not a dict of\n"
"columns (mlwatch._tabular.is_row_dict's first test).");

static PyObject *
all_row_dicts(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "all_row_dicts(values: list, scalar_types: frozenset)");
        return NULL;
    }
    PyObject *values = args[0], *types = args[1];
    /* Membership hashes the type, which runs Python code only under a metaclass defining __hash__
       or __eq__: the type is held meanwhile, and the list re-read on each step. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *d = PyList_GET_ITEM(values, i);
        if (!PyDict_CheckExact(d)) {
            Py_RETURN_FALSE;
        }
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        PyObject *t = PyDict_Next(d, &pos, &k, &v) ? (PyObject *)Py_TYPE(v) : (PyObject *)Py_TYPE(Py_None);
        Py_INCREF(t);
        int in = PySet_Contains(types, t);
        Py_DECREF(t);
        if (in < 0) {
            return NULL;
        }
        if (!in) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(flat_dict_rows_doc,
"flat_dict_rows(values, scalar_types, max_fields) -> bool\n\n"
"True when every item of the list `values` is an exact dict of at most `max_fields` entries whose\n"
"values' types are all in the frozenset `scalar_types`: parsed JSON bodies that are flat objects,\n"
"usable as feature rows as they are (mlwatch.integrations._body).");

static PyObject *
flat_dict_rows(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    Py_ssize_t max_fields = nargs == 3 ? PyLong_AsSsize_t(args[2]) : -1;
    if (nargs != 3 || !PyList_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1]) || max_fields < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "flat_dict_rows(values: list, scalar_types: frozenset, max_fields: int >= 0)");
        }
        return NULL;
    }
    PyObject *values = args[0], *types = args[1];
    /* The JSON scalar types' membership is looked up once (builtin types hash by identity); any
       other type's each time. As all_row_dicts: that may run Python code (a metaclass's __hash__ or
       __eq__), so the type is held meanwhile and the list and each dict re-read on every step; a
       dict that changes size while it is read answers False. */
    PyTypeObject *const scalars[5] = {&PyUnicode_Type, &PyFloat_Type, &PyLong_Type, &PyBool_Type, Py_TYPE(Py_None)};
    int scalar_in[5];
    for (int j = 0; j < 5; j++) {
        scalar_in[j] = PySet_Contains(types, (PyObject *)scalars[j]);
        if (scalar_in[j] < 0) {
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *d = PyList_GET_ITEM(values, i);
        if (!PyDict_CheckExact(d) || PyDict_GET_SIZE(d) > max_fields) {
            Py_RETURN_FALSE;
        }
        Py_INCREF(d);
        Py_ssize_t pos = 0, size = PyDict_GET_SIZE(d);
        PyObject *k, *v;
        int ok = 1;
        while (ok && PyDict_Next(d, &pos, &k, &v)) {
            PyTypeObject *t = Py_TYPE(v);
            int in = -2;
            for (int j = 0; j < 5 && in == -2; j++) {
                if (t == scalars[j]) {
                    in = scalar_in[j];
                }
            }
            if (in == -2) {
                Py_INCREF(t);
                in = PySet_Contains(types, (PyObject *)t);
                Py_DECREF(t);
            }
            if (in < 0) {
                Py_DECREF(d);
                return NULL;
            }
            ok = in && PyDict_GET_SIZE(d) == size;
        }
        Py_DECREF(d);
        if (!ok) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(dict_rows_width_doc,
"dict_rows_width(rows) -> int\n\n"
"The length shared by every item of the list `rows` when each is an exact dict of that length; -1\n"
"when each is an exact dict but their lengths differ (or the list is empty); -2 when one is not an\n"
"exact dict.");

static PyObject *
dict_rows_width(PyObject *self, PyObject *rows)
{
    (void)self;
    if (!PyList_CheckExact(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows), width = -1;
    for (Py_ssize_t i = 0; i < n; i++) { /* runs no Python code */
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyDict_CheckExact(row)) {
            return PyLong_FromLong(-2);
        }
        Py_ssize_t len = PyDict_GET_SIZE(row);
        if (i == 0) {
            width = len;
        }
        else if (len != width) {
            width = -1; /* keep going: a later item may not be a dict */
            for (; i < n; i++) {
                if (!PyDict_CheckExact(PyList_GET_ITEM(rows, i))) {
                    return PyLong_FromLong(-2);
                }
            }
            break;
        }
    }
    return PyLong_FromSsize_t(width);
}

PyDoc_STRVAR(plain_calls_doc,
"plain_calls(records, one_arg, durations, results) -> tuple[list, bool] | None\n\n"
"For a batch of buffered calls, each a 7-tuple (start, duration, argument, kwargs, result, error,\n"
"kind): when every one is a plain call (kwargs None, error None, kind `one_arg`, an int duration of\n"
"at most 2**53), write the durations to the float64 buffer `durations` and answer (the arguments,\n"
"whether every result was a float or an int, then written to `results`); else None.");

static PyObject *
plain_calls(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "plain_calls(records: list, one_arg, durations, results)");
        return NULL;
    }
    PyObject *records = args[0], *one_arg = args[1];
    Py_buffer lat, res;
    if (get_out(args[2], &lat, PyList_GET_SIZE(records)) < 0) {
        return NULL;
    }
    if (get_out(args[3], &res, PyList_GET_SIZE(records)) < 0) {
        PyBuffer_Release(&lat);
        return NULL;
    }
    /* Allocate first (on 3.11 an allocation may run the garbage collector, and so any __del__),
       then check the list is as long as the buffers: the loop below allocates nothing and runs no
       Python code, so the list cannot change under it. */
    Py_ssize_t n = PyList_GET_SIZE(records);
    PyObject *answer = NULL, *firsts = PyList_New(n);
    if (firsts == NULL) {
        goto done;
    }
    if (lat.len != n * (Py_ssize_t)sizeof(double) || res.len != n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "buffers must hold one item per record");
        goto done;
    }
    if (PyList_GET_SIZE(records) != n) { /* changed by a finalizer: the Python path reads what is there */
        answer = Py_None;
        Py_INCREF(answer);
        goto done;
    }
    double *d = (double *)lat.buf, *r = (double *)res.buf;
    int results_ok = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(records, i);
        if (!PyTuple_CheckExact(rec) || PyTuple_GET_SIZE(rec) != 7 || PyTuple_GET_ITEM(rec, 3) != Py_None
            || PyTuple_GET_ITEM(rec, 5) != Py_None || PyTuple_GET_ITEM(rec, 6) != one_arg
            || !PyLong_CheckExact(PyTuple_GET_ITEM(rec, 1)) || !as_double(PyTuple_GET_ITEM(rec, 1), &d[i])) {
            answer = Py_None; /* firsts' unfilled slots are NULL, which freeing it allows */
            Py_INCREF(answer);
            goto done;
        }
        if (results_ok) {
            results_ok = as_double(PyTuple_GET_ITEM(rec, 4), &r[i]);
        }
        PyObject *arg = PyTuple_GET_ITEM(rec, 2);
        Py_INCREF(arg);
        PyList_SET_ITEM(firsts, i, arg);
    }
    answer = Py_BuildValue("(NO)", firsts, results_ok ? Py_True : Py_False);
    firsts = NULL; /* stolen by N, even on failure */
done:
    Py_XDECREF(firsts);
    PyBuffer_Release(&lat);
    PyBuffer_Release(&res);
    return answer;
}

/* Attribute names read on the hot path, interned once at import. */
static PyObject *str_capacity = NULL, *str_batch_size = NULL, *str_running = NULL;

/* An int attribute of the runtime; 0 with *out set, or -1 (an exception maybe set) when it is
   missing or not an int. A positive int too large for Py_ssize_t reads as PY_SSIZE_T_MAX. */
static int
runtime_ssize(PyObject *runtime, PyObject *name, Py_ssize_t *out)
{
    PyObject *v = PyObject_GetAttr(runtime, name);
    if (v == NULL) {
        return -1;
    }
    int ok = PyLong_Check(v);
    if (ok) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        ok = overflow >= 0 && !(x == -1 && PyErr_Occurred()) && x >= 0;
        *out = overflow > 0 || x > (long long)PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)x;
    }
    Py_DECREF(v);
    return ok ? 0 : -1;
}

/* A buffered record whose items the garbage collector does not track (numbers, strings, bytes,
   None, a copied dict of such values) cannot be part of a cycle: it is untracked now, as the
   collector itself would do the first time it looked at it. Records wait in the buffer until the
   aggregator's next pass, and every collection meanwhile would walk them (their number still
   counts towards when one runs: untracking does not change that). */
void
mlwatch_untrack_plain(PyObject *record)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(record); i++) {
        PyObject *item = PyTuple_GET_ITEM(record, i);
        if (PyType_IS_GC(Py_TYPE(item)) && PyObject_GC_IsTracked(item)) { /* the flag first: no call for plain values */
            return;
        }
    }
    PyObject_GC_UnTrack(record); /* just made, so tracked */
}

/* The C fast paths' "not mine" (record_plain, the HTTP tap's finish): False, with any Exception
   cleared; a BaseException (KeyboardInterrupt, SystemExit) raised by Python code run meanwhile
   propagates. */
PyObject *
mlwatch_decline(void)
{
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    Py_RETURN_FALSE;
}

/* Whether the runtime takes one more record from C: running, room in the buffer, and not the record
   that completes a batch (the length that wakes the aggregator). -1 on an error. The limits read
   are left in *capacity and *batch for a second look at the length alone. */
int
mlwatch_room_for_one(PyObject *runtime, PyObject *queue, Py_ssize_t *capacity, Py_ssize_t *batch)
{
    Py_ssize_t length = PyObject_Length(queue);
    if (length < 0 || runtime_ssize(runtime, str_capacity, capacity) < 0 || runtime_ssize(runtime, str_batch_size, batch) < 0) {
        return -1;
    }
    PyObject *running = PyObject_GetAttr(runtime, str_running);
    if (running == NULL) {
        return -1;
    }
    int is_running = running == Py_True;
    Py_DECREF(running);
    return is_running && length < *capacity && length + 1 != *batch;
}

PyDoc_STRVAR(record_plain_doc,
"record_plain(state, t0, duration, args, kwargs, result) -> bool\n\n"
"The common call on @monitor's hot path, buffered in C: one dict argument (after `skip` leading\n"
"ones), no keywords, a result of an immutable type. `state` is (runtime, queue, queue.append, skip,\n"
"immutable types, ONE_ARG). Appends (t0, duration, a copy of the dict, None, result, None, ONE_ARG)\n"
"and answers True; answers False, having done nothing, for any other call and whenever the\n"
"buffer is full, the aggregator thread is not running, or this record would complete a batch\n"
"(the length that wakes the aggregator): the Python recorder then does all of it (drops counted,\n"
"the worker started or woken). Never raises an Exception: a failure answers False too.");

static PyObject *
record_plain(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) != 6) {
        Py_RETURN_FALSE;
    }
    PyObject *state = args[0], *call_args = args[3], *kwargs = args[4], *result = args[5];
    PyObject *runtime = PyTuple_GET_ITEM(state, 0), *queue = PyTuple_GET_ITEM(state, 1);
    PyObject *append = PyTuple_GET_ITEM(state, 2), *immutable = PyTuple_GET_ITEM(state, 4);
    Py_ssize_t skip = PyLong_AsSsize_t(PyTuple_GET_ITEM(state, 3));
    if (skip < 0 || !PyTuple_CheckExact(call_args) || PyTuple_GET_SIZE(call_args) != skip + 1
        || (kwargs != Py_None && (!PyDict_Check(kwargs) || PyDict_GET_SIZE(kwargs) != 0))
        || !PyFrozenSet_CheckExact(immutable)) {
        return mlwatch_decline();
    }
    PyObject *first = PyTuple_GET_ITEM(call_args, skip);
    if (!PyDict_CheckExact(first)) {
        Py_RETURN_FALSE;
    }
    /* Membership of the result's type: a frozenset of plain types hashes by identity. */
    Py_ssize_t capacity, batch;
    if (PySet_Contains(immutable, (PyObject *)Py_TYPE(result)) != 1 || mlwatch_room_for_one(runtime, queue, &capacity, &batch) != 1) {
        return mlwatch_decline(); /* the cheap checks first: a full buffer costs no copy */
    }
    PyObject *copy = PyDict_Copy(first);
    if (copy == NULL) {
        return mlwatch_decline();
    }
    PyObject *record = PyTuple_Pack(7, args[1], args[2], copy, Py_None, result, Py_None, PyTuple_GET_ITEM(state, 5));
    Py_DECREF(copy);
    if (record == NULL) {
        return mlwatch_decline();
    }
    mlwatch_untrack_plain(record);
    /* The copy and the tuple may have run the garbage collector (3.11), and so other calls: look at
       the length again, then append with nothing in between (a deque without maxlen runs no Python
       code on append). */
    Py_ssize_t length = PyObject_Length(queue);
    if (length < 0 || length >= capacity || length + 1 == batch) {
        Py_DECREF(record);
        return mlwatch_decline();
    }
    PyObject *r = PyObject_CallOneArg(append, record);
    Py_DECREF(record);
    if (r == NULL) {
        return mlwatch_decline();
    }
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(set_float64_doc,
"set_float64(numpy.float64) -> None\n\n"
"Read numpy.float64 values like floats (it subclasses float and shares its layout).");

static PyObject *
set_float64(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &PyFloat_Type)
        || ((PyTypeObject *)arg)->tp_basicsize != PyFloat_Type.tp_basicsize) {
        PyErr_SetString(PyExc_TypeError, "set_float64 takes a float subclass with float's layout");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(float64_type, (PyTypeObject *)arg);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set_float64", set_float64, METH_O, set_float64_doc},
    {"fill_floats", (PyCFunction)(void (*)(void))fill_floats, METH_FASTCALL, fill_floats_doc},
    {"fill_item_floats", (PyCFunction)(void (*)(void))fill_item_floats, METH_FASTCALL, fill_item_floats_doc},
    {"same_items", (PyCFunction)(void (*)(void))same_items, METH_FASTCALL, same_items_doc},
    {"columns_from_dicts", (PyCFunction)(void (*)(void))columns_from_dicts, METH_FASTCALL, columns_from_dicts_doc},
    {"record_plain", (PyCFunction)(void (*)(void))record_plain, METH_FASTCALL, record_plain_doc},
    {"plain_calls", (PyCFunction)(void (*)(void))plain_calls, METH_FASTCALL, plain_calls_doc},
    {"dict_rows_width", dict_rows_width, METH_O, dict_rows_width_doc},
    {"flat_dict_rows", (PyCFunction)(void (*)(void))flat_dict_rows, METH_FASTCALL, flat_dict_rows_doc},
    {"all_row_dicts", (PyCFunction)(void (*)(void))all_row_dicts, METH_FASTCALL, all_row_dicts_doc},
    {NULL, NULL, 0, NULL},
};

/* The HTTP tap (its own file) adds its type and function. */
static int
module_exec(PyObject *m)
{
    return mlwatch_http_tap_init(m);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "mlwatch._speedups",
    "The aggregator's per-value loops in C (optional: mlwatch works without them).",
    0,
    methods,
    slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (str_capacity == NULL || str_batch_size == NULL || str_running == NULL) {
        Py_XSETREF(str_capacity, PyUnicode_InternFromString("capacity"));
        Py_XSETREF(str_batch_size, PyUnicode_InternFromString("batch_size"));
        Py_XSETREF(str_running, PyUnicode_InternFromString("running"));
        if (str_capacity == NULL || str_batch_size == NULL || str_running == NULL) {
            Py_CLEAR(str_capacity);
            Py_CLEAR(str_batch_size);
            Py_CLEAR(str_running);
            return NULL;
        }
    }
    return PyModuleDef_Init(&module);
}
