/* A PKCS#11 module for tests only (tests/pkcs11_daemon.rs): a proxy of the
 * real module named by JWKSD_TEST_HANG_MODULE (SoftHSM2) whose C_Sign and
 * C_FindObjectsInit hang while the file named by JWKSD_TEST_HANG_FILE
 * exists, as the calls into a network HSM gone silent do; they then go on
 * to the real module. C_Sign is what /v1/sign waits for, C_FindObjectsInit
 * what the token watch's probe (Token::key) starts with. Everything else
 * is the real module's.
 *
 *   cc -shared -fPIC -o libhang.so hang_pkcs11.c -ldl
 *
 * The header is p11-kit's (Debian: libp11-kit-dev). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST real; /* the real module's functions */
static CK_FUNCTION_LIST proxy; /* real's, two of them replaced */
static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
static int loaded;

/* Sleeps in steps of 20 ms while the hang file exists. */
static void hang(void) {
  const char *file = getenv("JWKSD_TEST_HANG_FILE");
  while (file && access(file, F_OK) == 0)
    usleep(20 * 1000);
}

static CK_RV hang_Sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len,
                       CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) {
  hang();
  return real.C_Sign(s, data, len, sig, sig_len);
}

static CK_RV hang_FindObjectsInit(CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR tmpl,
                                  CK_ULONG count) {
  hang();
  return real.C_FindObjectsInit(s, tmpl, count);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  CK_RV rv = CKR_OK;
  if (!list)
    return CKR_ARGUMENTS_BAD;
  pthread_mutex_lock(&once);
  if (!loaded) {
    const char *path = getenv("JWKSD_TEST_HANG_MODULE");
    void *lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    CK_C_GetFunctionList get =
        lib ? (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList") : NULL;
    CK_FUNCTION_LIST_PTR got = NULL;
    rv = get ? get(&got) : CKR_GENERAL_ERROR;
    if (rv == CKR_OK && got) {
      real = *got;
      proxy = *got;
      proxy.C_GetFunctionList = C_GetFunctionList;
      proxy.C_Sign = hang_Sign;
      proxy.C_FindObjectsInit = hang_FindObjectsInit;
      loaded = 1;
    } else if (rv == CKR_OK) {
      rv = CKR_GENERAL_ERROR;
    }
  }
  pthread_mutex_unlock(&once);
  if (rv == CKR_OK)
    *list = &proxy;
  return rv;
}
