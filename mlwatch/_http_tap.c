/* The ASGI middleware's per-request bookkeeping in C: `http_tap(send, receive, headers, cap)`.

   A tap is the `send` the middleware hands the app (it notes the status, the response bytes and,
   on model routes, the JSON response body, then calls the server's `send` with the same message
   and returns its awaitable); its `receive` method is the app's `receive` when the body matters (an
   awaitable that reports each request message, the body as the app reads it); and its `finish`
   buffers the request's records. Under a real server the middleware's Python closures and
   BodyBuffer objects cost more than all of its recording: here one C object per request does what
   they did, with the same answers (`mlwatch.integrations._tap.PyHttpTap` is the Python version,
   used without the extension; tests compare the two).

   Nothing here raises into the app: a failure while reading a message (an odd message type, a
   mapping whose lookups raise) is kept in `error` for the middleware to count, and the message
   goes to the server untouched. KeyboardInterrupt and SystemExit propagate. Header names and
   values that are not bytes are skipped.
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <string.h>
#include <structmember.h>

static PyObject *s_type = NULL, *s_body = NULL, *s_status = NULL, *s_headers = NULL, *s_get = NULL, *s_join = NULL;
static PyObject *s_response_body = NULL, *s_response_start = NULL, *s_request = NULL;
static PyObject *s_route = NULL, *s_path = NULL;
static PyObject *empty_bytes = NULL, *empty_tuple = NULL;

/* In mlwatch/_speedups.c: whether a recorder's buffer takes one more record from C; a record of
   plain values taken out of the garbage collector's view; "not mine" (False, an Exception cleared). */
int mlwatch_room_for_one(PyObject *runtime, PyObject *queue, Py_ssize_t *capacity, Py_ssize_t *batch);
void mlwatch_untrack_plain(PyObject *record);
PyObject *mlwatch_decline(void);

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *send;
    PyObject *receive;
    PyObject *chunks[2]; /* request, response: NULL, one bytes, or a list of bytes */
    PyObject *error;     /* the last failure while reading a message, or NULL */
    Py_ssize_t cap;      /* < 0: keep no bodies */
    Py_ssize_t kept[2];
    long long request_size; /* < 0: unknown */
    long long response_size;
    long status;
    char counting; /* a chunked request body: its size is counted as the app reads it */
    char json;     /* the response is JSON (its body is kept) */
    char over[2];  /* a body went over the cap: nothing of it is kept */
} Tap;

/* A failure was raised: kept as `error` (0), or -1 for a BaseException that must propagate. */
static int
noted(Tap *t)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    Py_XSETREF(t->error, value);
    return 0;
}

/* message[key], or message.get(key, dflt) when dflt is given: a new reference, NULL with an error. */
static PyObject *
message_get(PyObject *message, PyObject *key, PyObject *dflt)
{
    if (PyDict_CheckExact(message)) {
        PyObject *v = PyDict_GetItemWithError(message, key);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (dflt == NULL) {
            PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        Py_INCREF(dflt);
        return dflt;
    }
    if (dflt == NULL) {
        return PyObject_GetItem(message, key);
    }
    return PyObject_CallMethodObjArgs(message, s_get, key, dflt, NULL);
}

static int
is_kind(PyObject *kind, PyObject *name)
{
    return kind == name || (PyUnicode_Check(kind) && PyUnicode_Compare(kind, name) == 0);
}

/* The bytes of a bytes or bytearray object, else NULL (no error). */
static const char *
bytes_of(PyObject *o, Py_ssize_t *n)
{
    if (PyBytes_Check(o)) {
        *n = PyBytes_GET_SIZE(o);
        return PyBytes_AS_STRING(o);
    }
    if (PyByteArray_Check(o)) {
        *n = PyByteArray_GET_SIZE(o);
        return PyByteArray_AS_STRING(o);
    }
    return NULL;
}

static int
lower_eq(const char *s, Py_ssize_t n, const char *lit)
{
    Py_ssize_t m = (Py_ssize_t)strlen(lit);
    if (n != m) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (Py_TOLOWER((unsigned char)s[i]) != lit[i]) {
            return 0;
        }
    }
    return 1;
}

static int
contains_json(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i + 4 <= n; i++) {
        if (Py_TOLOWER((unsigned char)s[i]) == 'j' && lower_eq(s + i, 4, "json")) {
            return 1;
        }
    }
    return 0;
}

/* (name, value) of one header, borrowed from `seq` (a new reference the caller drops), or -1. */
static int
header_pair(PyObject *item, PyObject **seq, PyObject **name, PyObject **value)
{
    *seq = PySequence_Fast(item, "a header is a (name, value) pair");
    if (*seq == NULL) {
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(*seq) != 2) {
        Py_CLEAR(*seq);
        PyErr_SetString(PyExc_ValueError, "a header is a (name, value) pair");
        return -1;
    }
    *name = PySequence_Fast_GET_ITEM(*seq, 0);
    *value = PySequence_Fast_GET_ITEM(*seq, 1);
    return 0;
}

/* Whether the first content-type header says JSON: 1, 0, or -1 with an error. */
static int
is_json(PyObject *headers)
{
    PyObject *it = PyObject_GetIter(headers);
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    int answer = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *seq, *name, *value;
        int r = header_pair(item, &seq, &name, &value);
        Py_DECREF(item);
        if (r < 0) {
            answer = -1;
            break;
        }
        Py_ssize_t n;
        const char *s = bytes_of(name, &n);
        if (s != NULL && lower_eq(s, n, "content-type")) {
            s = bytes_of(value, &n);
            answer = s != NULL && contains_json(s, n);
            Py_DECREF(seq);
            break;
        }
        Py_DECREF(seq);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : answer;
}

/* Keeps `chunk` (n bytes) as body `i` while the body stays within the cap; -1 with an error. */
static int
keep(Tap *t, int i, PyObject *chunk, Py_ssize_t n)
{
    if (n == 0 || t->over[i]) {
        return 0;
    }
    if (n > t->cap - t->kept[i]) {
        t->over[i] = 1;
        Py_CLEAR(t->chunks[i]);
        return 0;
    }
    t->kept[i] += n;
    PyObject *b;
    if (PyBytes_CheckExact(chunk)) {
        Py_INCREF(chunk);
        b = chunk;
    }
    else {
        b = PyBytes_FromObject(chunk); /* a bytearray or memoryview may be reused: copied */
        if (b == NULL) {
            return -1;
        }
    }
    PyObject *held = t->chunks[i];
    if (held == NULL) {
        t->chunks[i] = b;
        return 0;
    }
    Py_INCREF(held);
    if (PyList_CheckExact(held)) {
        int r = PyList_Append(held, b);
        Py_DECREF(b);
        Py_DECREF(held);
        return r;
    }
    PyObject *list = PyList_New(2); /* may run the garbage collector, and so a finalizer calling this tap */
    if (list == NULL) {
        Py_DECREF(held);
        Py_DECREF(b);
        return -1;
    }
    if (t->chunks[i] != held || t->over[i]) {
        /* the body changed meanwhile (a new JSON response started, or it went over the cap): this chunk
           belonged to what was there before */
        Py_DECREF(list);
        Py_DECREF(held);
        Py_DECREF(b);
        return 0;
    }
    PyList_SET_ITEM(list, 0, held); /* our reference moves into the list */
    PyList_SET_ITEM(list, 1, b);
    t->chunks[i] = list;
    Py_DECREF(held); /* the tap's own, now the list's */
    return 0;
}

/* A body message (request: i = 0, response: i = 1): its size counted, its bytes kept as asked. */
static int
note_body(Tap *t, PyObject *message, int i)
{
    PyObject *body = message_get(message, s_body, empty_bytes);
    if (body == NULL) {
        return -1;
    }
    Py_ssize_t n = PyBytes_CheckExact(body) ? PyBytes_GET_SIZE(body) : PyObject_Size(body);
    int r = 0;
    if (n < 0) {
        r = -1;
    }
    else if (i == 1) {
        t->response_size += n;
        if (t->json && t->cap >= 0) {
            r = keep(t, 1, body, n);
        }
    }
    else {
        if (t->counting && t->request_size >= 0) {
            t->request_size += n;
        }
        if (t->cap >= 0) {
            r = keep(t, 0, body, n);
        }
    }
    Py_DECREF(body);
    return r;
}

static int
note_start(Tap *t, PyObject *message)
{
    PyObject *status = message_get(message, s_status, NULL);
    if (status == NULL) {
        return -1;
    }
    long s = PyLong_AsLong(status);
    Py_DECREF(status);
    if (s == -1 && PyErr_Occurred()) {
        return -1;
    }
    t->status = s;
    if (t->cap >= 0) {
        PyObject *headers = message_get(message, s_headers, empty_tuple);
        if (headers == NULL) {
            return -1;
        }
        int j = is_json(headers);
        Py_DECREF(headers);
        if (j < 0) {
            return -1;
        }
        if (j) {
            t->json = 1;
            Py_CLEAR(t->chunks[1]);
            t->kept[1] = 0;
            t->over[1] = 0;
        }
    }
    return 0;
}

/* A message the app sends: 0 (a failure noted), or -1 when a BaseException must propagate. */
static int
tap_note(Tap *t, PyObject *message)
{
    PyObject *kind = message_get(message, s_type, NULL);
    int r = 0;
    if (kind != NULL) {
        if (is_kind(kind, s_response_body)) {
            r = note_body(t, message, 1);
        }
        else if (is_kind(kind, s_response_start)) {
            r = note_start(t, message);
        }
        Py_DECREF(kind);
    }
    else {
        r = -1;
    }
    return r < 0 ? noted(t) : 0;
}

static PyObject *
tap_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Tap *t = (Tap *)self;
    if (PyVectorcall_NARGS(nargsf) == 1 && kwnames == NULL && tap_note(t, args[0]) < 0) {
        return NULL;
    }
    PyObject *send = t->send;
    if (send == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mlwatch: this request's send was cleared");
        return NULL;
    }
    Py_INCREF(send);
    PyObject *r = PyObject_Vectorcall(send, args, nargsf, kwnames);
    Py_DECREF(send);
    return r;
}

static PyObject *
tap_note_method(PyObject *self, PyObject *message)
{
    if (tap_note((Tap *)self, message) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
tap_received(PyObject *self, PyObject *message)
{
    Tap *t = (Tap *)self;
    PyObject *kind = message_get(message, s_type, NULL);
    int r = 0;
    if (kind != NULL) {
        if (is_kind(kind, s_request)) {
            r = note_body(t, message, 0);
        }
        Py_DECREF(kind);
    }
    else {
        r = -1;
    }
    if (r < 0 && noted(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Body i as one bytes object: a new reference, None when nothing is kept, NULL on an error. */
static PyObject *
joined(Tap *t, int i)
{
    PyObject *held = t->chunks[i];
    if (held == NULL || t->over[i]) {
        Py_RETURN_NONE;
    }
    if (PyBytes_CheckExact(held)) {
        Py_INCREF(held);
        return held;
    }
    return PyObject_CallMethodOneArg(empty_bytes, s_join, held);
}

static PyObject *
tap_peek_request(PyObject *self, PyObject *unused)
{
    (void)unused;
    return joined((Tap *)self, 0);
}

static PyObject *
tap_peek_response(PyObject *self, PyObject *unused)
{
    (void)unused;
    return joined((Tap *)self, 1);
}

static PyObject *
tap_bodies(PyObject *self, PyObject *unused)
{
    (void)unused;
    Tap *t = (Tap *)self;
    /* nothing is kept with cap < 0, and a response body only when it is JSON */
    PyObject *req = joined(t, 0);
    if (req == NULL) {
        return NULL;
    }
    PyObject *resp = joined(t, 1);
    if (resp == NULL) {
        Py_DECREF(req);
        return NULL;
    }
    return Py_BuildValue("(NNi)", req, resp, t->over[0] + t->over[1]);
}

/* The route template Starlette leaves in the scope (asgi.route_from_scope): a new reference, None
   when there is none, NULL with an error. */
static PyObject *
route_template(PyObject *scope)
{
    PyObject *route = PyDict_GetItemWithError(scope, s_route);
    if (route == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    if (route == Py_None) {
        Py_RETURN_NONE;
    }
    Py_INCREF(route);
    PyObject *path = PyObject_GetAttr(route, s_path);
    Py_DECREF(route);
    if (path == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (!PyUnicode_Check(path)) {
        Py_DECREF(path);
        Py_RETURN_NONE;
    }
    return path;
}

/* A sink: (runtime, queue, queue.append[, ONE_ARG]) with room for one more record from C. */
static int
sink_room(PyObject *sink, Py_ssize_t size, Py_ssize_t *capacity, Py_ssize_t *batch)
{
    if (!PyTuple_CheckExact(sink) || PyTuple_GET_SIZE(sink) != size) {
        return 0;
    }
    return mlwatch_room_for_one(PyTuple_GET_ITEM(sink, 0), PyTuple_GET_ITEM(sink, 1), capacity, batch);
}

/* Whether the queue still takes the record (the length looked at again, with nothing run since). */
static int
still_room(PyObject *sink, Py_ssize_t capacity, Py_ssize_t batch)
{
    Py_ssize_t length = PyObject_Length(PyTuple_GET_ITEM(sink, 1));
    return length >= 0 && length < capacity && length + 1 != batch;
}

#define FINISH_HELD 8

static void
release(PyObject *held[FINISH_HELD])
{
    for (int i = 0; i < FINISH_HELD; i++) {
        Py_CLEAR(held[i]);
    }
}

static PyObject *
finish_decline(PyObject *held[FINISH_HELD])
{
    release(held);
    return mlwatch_decline();
}

PyDoc_STRVAR(tap_finish_doc,
"finish(http, model, t0, duration, error, scope, method, scheme, active) -> bool\n\n"
"The request's records, buffered from C: the request's (`http`: (runtime, queue, queue.append), or\n"
"None for none) and the model route's call (`model`: (runtime, queue, queue.append, ONE_ARG), None\n"
"for no model route, False when its recorder samples). Answers False, having buffered nothing,\n"
"whenever the Python recorders must decide (a failure noted, a body over the cap, a sampled model,\n"
"a full buffer, the record completing a batch, the worker not running): the middleware then\n"
"records through them. The route template is read from scope[\"route\"].path, as Starlette sets it.");

static PyObject *
tap_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Tap *t = (Tap *)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "finish takes 9 arguments");
        return NULL;
    }
    PyObject *http = args[0], *model = args[1], *error = args[4], *scope = args[5];
    /* error_type, route, http record, model record, and the pieces of the records */
    PyObject *held[FINISH_HELD] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (t->error != NULL || model == Py_False || !PyDict_CheckExact(scope)
        || (model != Py_None && (t->over[0] || t->over[1]))) {
        Py_RETURN_FALSE;
    }
    long status = t->status;
    if (error != Py_None) {
        held[0] = PyType_GetName(Py_TYPE(error));
        if (held[0] == NULL) {
            return finish_decline(held);
        }
        if (status == 0) {
            status = 500; /* the server answers 500 to an exception raised before the response started */
        }
    }
    PyObject *error_type = held[0] != NULL ? held[0] : Py_None;
    int want_model = model != Py_None && !(error == Py_None && status >= 400 && status < 500); /* 4xx: no model call */
    Py_ssize_t cap_h = 0, batch_h = 0, cap_m = 0, batch_m = 0;
    if (http != Py_None && sink_room(http, 3, &cap_h, &batch_h) != 1) {
        return finish_decline(held);
    }
    if (want_model) {
        if (http != Py_None && PyTuple_CheckExact(model) && PyTuple_GET_SIZE(model) == 4
            && PyTuple_GET_ITEM(model, 0) == PyTuple_GET_ITEM(http, 0)) {
            /* the same runtime, read a moment ago (running, limits): the model's buffer length alone */
            cap_m = cap_h;
            batch_m = batch_h;
            if (!still_room(model, cap_m, batch_m)) {
                return finish_decline(held);
            }
        }
        else if (sink_room(model, 4, &cap_m, &batch_m) != 1) {
            return finish_decline(held);
        }
    }
    if (http != Py_None) {
        held[1] = route_template(scope);
        held[3] = PyLong_FromLong(status);
        held[4] = t->request_size >= 0 ? PyLong_FromLongLong(t->request_size) : (Py_INCREF(Py_None), Py_None);
        held[5] = PyLong_FromLongLong(t->response_size);
        if (held[1] == NULL || held[3] == NULL || held[4] == NULL || held[5] == NULL) {
            return finish_decline(held);
        }
        held[2] = PyTuple_Pack(10, args[2], args[3], args[6], held[1], held[3], error_type, held[4], held[5], args[8], args[7]);
        if (held[2] == NULL) {
            return finish_decline(held);
        }
        mlwatch_untrack_plain(held[2]);
    }
    if (want_model) {
        PyObject *body = joined(t, 0);
        held[6] = body;
        if (body == NULL) {
            return finish_decline(held);
        }
        if (body == Py_None) {
            Py_DECREF(body);
            Py_INCREF(empty_bytes);
            held[6] = empty_bytes;
        }
        held[7] = error == Py_None && status >= 200 && status < 300 ? joined(t, 1) : (Py_INCREF(Py_None), Py_None);
        if (held[7] == NULL) {
            return finish_decline(held);
        }
        PyObject *rec = PyTuple_Pack(7, args[2], args[3], held[6], Py_None, held[7], error_type, PyTuple_GET_ITEM(model, 3));
        if (rec == NULL) {
            return finish_decline(held);
        }
        mlwatch_untrack_plain(rec);
        Py_SETREF(held[6], rec); /* the model record holds the body now */
        Py_CLEAR(held[7]);
    }
    /* Allocating may have run the garbage collector, and so other code: the lengths once more, then
       the appends with nothing in between (a deque without maxlen runs no Python code on append). */
    if ((held[2] != NULL && !still_room(http, cap_h, batch_h)) || (want_model && !still_room(model, cap_m, batch_m))) {
        return finish_decline(held);
    }
    if (want_model) {
        PyObject *r = PyObject_CallOneArg(PyTuple_GET_ITEM(model, 2), held[6]);
        if (r == NULL) {
            return finish_decline(held);
        }
        Py_DECREF(r);
    }
    if (held[2] != NULL) {
        PyObject *r = PyObject_CallOneArg(PyTuple_GET_ITEM(http, 2), held[2]);
        if (r == NULL) { /* the model's record went in: an error now, not a second record by Python */
            release(held);
            return NULL;
        }
        Py_DECREF(r);
    }
    release(held);
    Py_RETURN_TRUE;
}

static PyObject *
get_request_size(PyObject *self, void *closure)
{
    (void)closure;
    Tap *t = (Tap *)self;
    if (t->request_size < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLongLong(t->request_size);
}

static int
tap_traverse(PyObject *self, visitproc visit, void *arg)
{
    Tap *t = (Tap *)self;
    Py_VISIT(t->send);
    Py_VISIT(t->receive);
    Py_VISIT(t->chunks[0]);
    Py_VISIT(t->chunks[1]);
    Py_VISIT(t->error);
    return 0;
}

static int
tap_clear(PyObject *self)
{
    Tap *t = (Tap *)self;
    Py_CLEAR(t->send);
    Py_CLEAR(t->receive);
    Py_CLEAR(t->chunks[0]);
    Py_CLEAR(t->chunks[1]);
    Py_CLEAR(t->error);
    return 0;
}

static void
tap_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    tap_clear(self);
    PyObject_GC_Del(self);
}

/* ------------------------------------------------------------------ receive
   `tap.receive()` returns a ReceiveWait: an awaitable that, like the coroutine it stands for, calls
   the server's receive at its first step, then steps the server's awaitable (send, throw and close
   passed down as a coroutine's `await` would), and reports the message it returns to the tap before
   handing it to the app. No Python frame in between. */

typedef struct {
    PyObject_HEAD
    PyObject *tap;
    PyObject *receive; /* the server's receive, until the first step calls it (as a coroutine would) */
    PyObject *it;      /* the server's awaitable's iterator, from the first step until done */
} ReceiveWait;

static PyTypeObject WaitType;

/* What `await o` steps: a coroutine or generator itself, else o.__await__(). A new reference. */
static PyObject *
awaitable_iter(PyObject *o)
{
    if (PyCoro_CheckExact(o)) {
        Py_INCREF(o);
        return o;
    }
    if (PyGen_CheckExact(o)) { /* a generator-based coroutine (types.coroutine) only, as `await` takes */
        PyObject *code = PyObject_GetAttrString(o, "gi_code");
        int ok = code != NULL && PyCode_Check(code) && (((PyCodeObject *)code)->co_flags & CO_ITERABLE_COROUTINE);
        Py_XDECREF(code);
        if (ok) {
            Py_INCREF(o);
            return o;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    PyAsyncMethods *am = Py_TYPE(o)->tp_as_async;
    if (am == NULL || am->am_await == NULL) {
        PyErr_Format(PyExc_TypeError, "object %.100s can't be used in 'await' expression", Py_TYPE(o)->tp_name);
        return NULL;
    }
    PyObject *it = am->am_await(o);
    if (it != NULL && PyCoro_CheckExact(it)) {
        PyErr_SetString(PyExc_TypeError, "__await__() returned a coroutine");
        Py_CLEAR(it);
    }
    else if (it != NULL && !PyIter_Check(it)) {
        PyErr_Format(PyExc_TypeError, "__await__() returned non-iterator of type '%.100s'", Py_TYPE(it)->tp_name);
        Py_CLEAR(it);
    }
    return it;
}

/* The message came back: reported to the tap (0), or -1 for a BaseException that must propagate. */
static int
wait_done(ReceiveWait *w, PyObject *message)
{
    Py_CLEAR(w->it);
    PyObject *r = tap_received(w->tap, message);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PySendResult
wait_send(PyObject *self, PyObject *value, PyObject **result)
{
    ReceiveWait *w = (ReceiveWait *)self;
    if (w->it == NULL && w->receive != NULL) { /* the first step: the server's receive is called now */
        PyObject *receive = w->receive;
        w->receive = NULL;
        PyObject *awaitable = PyObject_CallNoArgs(receive);
        Py_DECREF(receive);
        w->it = awaitable != NULL ? awaitable_iter(awaitable) : NULL;
        Py_XDECREF(awaitable);
        if (w->it == NULL) {
            *result = NULL;
            return PYGEN_ERROR;
        }
    }
    if (w->it == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited receive");
        *result = NULL;
        return PYGEN_ERROR;
    }
    PyObject *it = w->it;
    Py_INCREF(it);
    PySendResult r = PyIter_Send(it, value, result);
    Py_DECREF(it);
    if (r == PYGEN_RETURN) {
        if (wait_done(w, *result) < 0) {
            Py_CLEAR(*result);
            return PYGEN_ERROR;
        }
    }
    else if (r == PYGEN_ERROR) {
        Py_CLEAR(w->it);
    }
    return r;
}

/* A generator-style answer: the value yielded, or NULL with StopIteration(value) when done. */
static PyObject *
wait_step(PyObject *self, PyObject *value)
{
    PyObject *result;
    PySendResult r = wait_send(self, value, &result);
    if (r == PYGEN_NEXT) {
        return result;
    }
    if (r == PYGEN_RETURN) {
        PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
        Py_DECREF(result);
        if (stop != NULL) {
            PyErr_SetObject(PyExc_StopIteration, stop);
            Py_DECREF(stop);
        }
    }
    return NULL;
}

static PyObject *
wait_next(PyObject *self)
{
    return wait_step(self, Py_None);
}

static PyObject *
wait_await(PyObject *self)
{
    Py_INCREF(self);
    return self;
}

/* throw(type[, value[, traceback]]) raised here, as a finished coroutine raises it. */
static PyObject *
raise_given(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *typ = args[0], *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    }
    else {
        PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
    }
    return NULL;
}

static PyObject *
wait_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    ReceiveWait *w = (ReceiveWait *)self;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    Py_CLEAR(w->receive); /* thrown into before its first step: the server's receive is never called */
    if (w->it == NULL) {
        return raise_given(args, nargs);
    }
    PyObject *it = w->it;
    Py_INCREF(it);
    PyObject *meth = PyObject_GetAttrString(it, "throw");
    if (meth == NULL) {
        Py_DECREF(it);
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_CLEAR(w->it);
        return raise_given(args, nargs);
    }
    PyObject *res = PyObject_Vectorcall(meth, args, (size_t)nargs, NULL);
    Py_DECREF(meth);
    Py_DECREF(it);
    if (res != NULL) {
        return res; /* the server's awaitable yielded again */
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        Py_CLEAR(w->it);
        return NULL;
    }
    /* It returned a message after all: reported, then the same StopIteration goes on up. */
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    PyObject *message = exc != NULL ? PyObject_GetAttrString(exc, "value") : NULL;
    int r = message != NULL ? wait_done(w, message) : -1;
    Py_XDECREF(message);
    if (r < 0) {
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return NULL;
    }
    PyErr_Restore(type, exc, tb);
    return NULL;
}

static PyObject *
wait_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    ReceiveWait *w = (ReceiveWait *)self;
    Py_CLEAR(w->receive);
    PyObject *it = w->it;
    w->it = NULL;
    if (it == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *meth = PyObject_GetAttrString(it, "close");
    Py_DECREF(it);
    if (meth == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *res = PyObject_CallNoArgs(meth);
    Py_DECREF(meth);
    return res;
}

static int
wait_traverse(PyObject *self, visitproc visit, void *arg)
{
    ReceiveWait *w = (ReceiveWait *)self;
    Py_VISIT(w->tap);
    Py_VISIT(w->receive);
    Py_VISIT(w->it);
    return 0;
}

static int
wait_clear(PyObject *self)
{
    ReceiveWait *w = (ReceiveWait *)self;
    Py_CLEAR(w->tap);
    Py_CLEAR(w->receive);
    Py_CLEAR(w->it);
    return 0;
}

static void
wait_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    wait_clear(self);
    PyObject_GC_Del(self);
}

static PyMethodDef wait_methods[] = {
    {"send", wait_step, METH_O, "send(value): step the server's awaitable."},
    {"throw", (PyCFunction)(void (*)(void))wait_throw, METH_FASTCALL, "throw(type[, value[, traceback]]): passed to the server's awaitable."},
    {"close", wait_close, METH_NOARGS, "close(): the server's awaitable closed."},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods wait_async = {
    .am_await = wait_await,
    .am_send = wait_send,
};

static PyTypeObject WaitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mlwatch._speedups.ReceiveWait",
    .tp_basicsize = sizeof(ReceiveWait),
    .tp_dealloc = wait_dealloc,
    .tp_as_async = &wait_async,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The server's receive, awaited for the app, its message reported to the tap.",
    .tp_traverse = wait_traverse,
    .tp_clear = wait_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = wait_next,
    .tp_methods = wait_methods,
};

static PyObject *
tap_receive(PyObject *self, PyObject *unused)
{
    (void)unused;
    Tap *t = (Tap *)self;
    if (t->receive == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mlwatch: this request's receive was cleared");
        return NULL;
    }
    ReceiveWait *w = PyObject_GC_New(ReceiveWait, &WaitType);
    if (w == NULL) {
        return NULL;
    }
    Py_INCREF(self);
    w->tap = self;
    Py_INCREF(t->receive);
    w->receive = t->receive;
    w->it = NULL;
    PyObject_GC_Track((PyObject *)w);
    return (PyObject *)w;
}

static PyMethodDef tap_methods[] = {
    {"note", tap_note_method, METH_O, "note(message): what the app sends, noted without sending it."},
    {"receive", tap_receive, METH_NOARGS, "receive(): the server's receive, its message reported to `received` (awaitable)."},
    {"received", tap_received, METH_O, "received(message): a message the app received (the request body)."},
    {"bodies", tap_bodies, METH_NOARGS,
     "bodies() -> (request body or None, JSON response body or None, bodies over the cap)."},
    {"finish", (PyCFunction)(void (*)(void))tap_finish, METH_FASTCALL, tap_finish_doc},
    {"peek_request", tap_peek_request, METH_NOARGS, "peek_request() -> the request body kept so far, or None."},
    {"peek_response", tap_peek_response, METH_NOARGS, "peek_response() -> the JSON response body kept so far, or None."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef tap_members[] = {
    {"status", T_LONG, offsetof(Tap, status), READONLY, "the status sent (0: none yet)"},
    {"response_size", T_LONGLONG, offsetof(Tap, response_size), READONLY, "response body bytes sent"},
    {"counting", T_BOOL, offsetof(Tap, counting), READONLY, "whether the request body's size is counted as the app reads it"},
    {"json", T_BOOL, offsetof(Tap, json), READONLY, "whether the response is JSON"},
    {"error", T_OBJECT, offsetof(Tap, error), READONLY, "the last failure while reading a message, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef tap_getset[] = {
    {"request_size", get_request_size, NULL, "request body bytes (content-length, or counted as read), None if unknown", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mlwatch._speedups.HttpTap",
    .tp_basicsize = sizeof(Tap),
    .tp_dealloc = tap_dealloc,
    .tp_vectorcall_offset = offsetof(Tap, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One request's send (see http_tap).",
    .tp_traverse = tap_traverse,
    .tp_clear = tap_clear,
    .tp_methods = tap_methods,
    .tp_members = tap_members,
    .tp_getset = tap_getset,
};

/* The request body's size from the scope's headers: content-length, or counting for a chunked body. */
static int
scan_request_headers(Tap *t, PyObject *headers)
{
    PyObject *it = PyObject_GetIter(headers);
    if (it == NULL) {
        t->request_size = -1;
        return -1;
    }
    PyObject *item;
    int chunked = 0, found = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *seq, *name, *value;
        int r = header_pair(item, &seq, &name, &value);
        Py_DECREF(item);
        if (r < 0) {
            break;
        }
        Py_ssize_t n, m;
        const char *s = bytes_of(name, &n);
        if (s != NULL && n == 14 && memcmp(s, "content-length", 14) == 0) {
            /* up to 18 digits (no overflow); anything else is an unknown size */
            const char *v = bytes_of(value, &m);
            long long size = v != NULL && m > 0 && m <= 18 ? 0 : -1;
            for (Py_ssize_t i = 0; size >= 0 && i < m; i++) {
                size = v[i] >= '0' && v[i] <= '9' ? size * 10 + (v[i] - '0') : -1;
            }
            t->request_size = size;
            found = 1;
            Py_DECREF(seq);
            break;
        }
        if (s != NULL && n == 17 && memcmp(s, "transfer-encoding", 17) == 0) {
            chunked = 1;
        }
        Py_DECREF(seq);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        t->request_size = -1;
        return -1;
    }
    if (!found) {
        t->request_size = 0;
    }
    t->counting = chunked && t->request_size == 0;
    return 0;
}

PyDoc_STRVAR(http_tap_doc,
"http_tap(send, receive, headers, cap) -> HttpTap\n\n"
"One request's tap: call it as the app's `send` (it notes the status, the response's size and,\n"
"with cap >= 0, a JSON response's body up to cap bytes, then returns send(message)); give the app\n"
"its `receive` method as `receive` (each message the server's `receive` gives is reported to\n"
"`received`: the request body's size when chunked, and its bytes up to cap when cap >= 0).\n"
"`headers` are the scope's: the request body's size comes from content-length.");

static PyObject *
http_tap(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "http_tap takes (send, receive, headers, cap)");
        return NULL;
    }
    Py_ssize_t cap = PyLong_AsSsize_t(args[3]);
    if (cap == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Tap *t = PyObject_GC_New(Tap, &TapType);
    if (t == NULL) {
        return NULL;
    }
    t->vectorcall = tap_vectorcall;
    Py_INCREF(args[0]);
    t->send = args[0];
    Py_INCREF(args[1]);
    t->receive = args[1];
    t->chunks[0] = t->chunks[1] = NULL;
    t->error = NULL;
    t->cap = cap;
    t->kept[0] = t->kept[1] = 0;
    t->request_size = 0;
    t->response_size = 0;
    t->status = 0;
    t->counting = t->json = t->over[0] = t->over[1] = 0;
    PyObject_GC_Track((PyObject *)t);
    if (scan_request_headers(t, args[2]) < 0 && noted(t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static PyMethodDef functions[] = {
    {"http_tap", (PyCFunction)(void (*)(void))http_tap, METH_FASTCALL, http_tap_doc},
    {NULL, NULL, 0, NULL},
};

int
mlwatch_http_tap_init(PyObject *module)
{
    if (s_type == NULL) {
        s_type = PyUnicode_InternFromString("type");
        s_body = PyUnicode_InternFromString("body");
        s_status = PyUnicode_InternFromString("status");
        s_headers = PyUnicode_InternFromString("headers");
        s_get = PyUnicode_InternFromString("get");
        s_join = PyUnicode_InternFromString("join");
        s_response_body = PyUnicode_InternFromString("http.response.body");
        s_response_start = PyUnicode_InternFromString("http.response.start");
        s_request = PyUnicode_InternFromString("http.request");
        s_route = PyUnicode_InternFromString("route");
        s_path = PyUnicode_InternFromString("path");
        empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
        empty_tuple = PyTuple_New(0);
        if (!s_type || !s_body || !s_status || !s_headers || !s_get || !s_join || !s_response_body || !s_response_start
            || !s_request || !s_route || !s_path || !empty_bytes || !empty_tuple) {
            Py_CLEAR(s_type);
            Py_CLEAR(s_body);
            Py_CLEAR(s_status);
            Py_CLEAR(s_headers);
            Py_CLEAR(s_get);
            Py_CLEAR(s_join);
            Py_CLEAR(s_response_body);
            Py_CLEAR(s_response_start);
            Py_CLEAR(s_request);
            Py_CLEAR(s_route);
            Py_CLEAR(s_path);
            Py_CLEAR(empty_bytes);
            Py_CLEAR(empty_tuple);
            return -1;
        }
    }
    if (PyType_Ready(&TapType) < 0 || PyType_Ready(&WaitType) < 0 || PyModule_AddFunctions(module, functions) < 0) {
        return -1;
    }
    Py_INCREF(&TapType);
    if (PyModule_AddObject(module, "HttpTap", (PyObject *)&TapType) < 0) {
        Py_DECREF(&TapType);
        return -1;
    }
    return 0;
}
