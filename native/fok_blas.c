/*
 * fok_blas: single-precision matrix products for the tfjs wasm backend, computed by the machine's BLAS directly on
 * the wasm heap (an ArrayBuffer the caller passes each time: the heap moves when it grows). The BLAS is found at run
 * time with dlopen (OpenBLAS, else the reference libblas/cblas), so building needs only a C compiler and Node's
 * headers, and a machine without a BLAS loads the addon and reports it unavailable.
 */
#include <dlfcn.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
typedef void (*sgemm_fn)(int order, int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc);
typedef void (*set_threads_fn)(int);

static sgemm_fn sgemm = NULL;
static set_threads_fn set_threads = NULL;
static char library[256] = "";

static void load_blas(void) {
  const char *names[] = {"libopenblas.so.0", "libopenblas.so", "libcblas.so.3", "libblas.so.3", NULL};
  for (int i = 0; names[i] && !sgemm; i++) {
    void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) continue;
    sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    if (!sgemm) {
      dlclose(h);
      continue;
    }
    set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
    snprintf(library, sizeof library, "%s", names[i]);
  }
}

#define CHECK(call)                                                                                                    \
  if ((call) != napi_ok) {                                                                                             \
    napi_throw_error(env, NULL, "fok_blas: bad arguments");                                                            \
    return NULL;                                                                                                       \
  }

/* library(): the BLAS in use, or "" when none was found. */
static napi_value Library(napi_env env, napi_callback_info info) {
  napi_value out;
  CHECK(napi_create_string_utf8(env, library, NAPI_AUTO_LENGTH, &out));
  return out;
}

/* setThreads(n): the BLAS's own threads (OpenBLAS only; a no-op elsewhere). */
static napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t n;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &n));
  if (set_threads && n > 0) set_threads(n);
  return NULL;
}

/*
 * sgemmBatched(heap, batch, transA, transB, M, N, K, aOffset, aStride, bOffset, bStride, cOffset): for each i <
 * batch, C_i = op(A_i)·op(B_i), row-major, where X_i starts at byte xOffset + 4·i·xStride of `heap` (a stride of 0
 * repeats one matrix) and C_i is [M, N] at cOffset + 4·i·M·N. op(A) is [M, K], op(B) is [K, N]. Every matrix is
 * checked to lie inside the heap.
 */
static napi_value SgemmBatched(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 12 || !sgemm) {
    napi_throw_error(env, NULL, sgemm ? "fok_blas: sgemmBatched takes 12 arguments" : "fok_blas: no BLAS");
    return NULL;
  }
  void *data;
  size_t bytes;
  CHECK(napi_get_arraybuffer_info(env, argv[0], &data, &bytes));
  int64_t v[11];
  for (int i = 0; i < 11; i++) CHECK(napi_get_value_int64(env, argv[i + 1], &v[i]));
  int64_t batch = v[0], tA = v[1], tB = v[2], M = v[3], N = v[4], K = v[5];
  int64_t aOff = v[6], aStride = v[7], bOff = v[8], bStride = v[9], cOff = v[10];
  if (batch < 0 || M < 0 || N < 0 || K < 0 || aStride < 0 || bStride < 0 || aOff < 0 || bOff < 0 || cOff < 0 ||
      (aOff | bOff | cOff) % 4 != 0 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
    napi_throw_range_error(env, NULL, "fok_blas: sizes or offsets out of range");
    return NULL;
  }
  int64_t last = batch > 0 ? batch - 1 : 0;
  if (batch > 0 && (aOff + 4 * (last * aStride + M * K) > (int64_t)bytes ||
                    bOff + 4 * (last * bStride + K * N) > (int64_t)bytes ||
                    cOff + 4 * (batch * M * N) > (int64_t)bytes)) {
    napi_throw_range_error(env, NULL, "fok_blas: a matrix lies outside the heap");
    return NULL;
  }
  float *heap = (float *)data;
  int lda = tA ? (int)M : (int)K, ldb = tB ? (int)K : (int)N;
  for (int64_t i = 0; i < batch; i++) {
    const float *A = heap + aOff / 4 + i * aStride;
    const float *B = heap + bOff / 4 + i * bStride;
    float *C = heap + cOff / 4 + i * M * N;
    if (K == 0) {
      memset(C, 0, (size_t)(M * N) * sizeof(float));
      continue;
    }
    sgemm(ROW_MAJOR, tA ? TRANS : NO_TRANS, tB ? TRANS : NO_TRANS, (int)M, (int)N, (int)K, 1.0f, A, lda, B, ldb, 0.0f,
          C, (int)N);
  }
  return NULL;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  load_blas();
  napi_property_descriptor props[] = {
      {"library", NULL, Library, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, SetThreads, NULL, NULL, NULL, napi_default, NULL},
      {"sgemmBatched", NULL, SgemmBatched, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, 3, props) != napi_ok) return NULL;
  return exports;
}
