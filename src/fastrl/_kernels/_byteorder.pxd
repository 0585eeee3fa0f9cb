# Little-endian stores that do not depend on the host's byte order. On little-endian hosts (all
# the platforms fastrl is built for in practice) they compile to plain stores the C compiler can
# vectorize; on big-endian hosts they byte-swap, so the files are the same everywhere.
from libc.stdint cimport int32_t, int64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    #define FASTRL_HOST_BIG_ENDIAN 1
    #else
    #define FASTRL_HOST_BIG_ENDIAN 0
    #endif
    static inline void fastrl_store_f32_le(float *dst, float v) {
    #if FASTRL_HOST_BIG_ENDIAN
        uint32_t u; memcpy(&u, &v, 4); u = __builtin_bswap32(u); memcpy(dst, &u, 4);
    #else
        *dst = v;
    #endif
    }
    static inline void fastrl_store_i32_le(int32_t *dst, int32_t v) {
    #if FASTRL_HOST_BIG_ENDIAN
        uint32_t u = (uint32_t)v; u = __builtin_bswap32(u); memcpy(dst, &u, 4);
    #else
        *dst = v;
    #endif
    }
    /* Row helpers for the packing kernel. Finiteness is read from the bits: a float32 is NaN or
       +-inf exactly when its 8 exponent bits are all ones; adding 1 to such an exponent field
       carries into bit 31. Integer AND/ADD/OR only, so the loop vectorizes with plain SSE2. */
    typedef uint32_t __attribute__((may_alias)) fastrl_u32_alias;
    static inline int fastrl_any_nonfinite_f32(const float *p, int64_t n) {
        const fastrl_u32_alias *u = (const fastrl_u32_alias *)p;
        uint32_t acc = 0;
        for (int64_t j = 0; j < n; j++) acc |= (u[j] & 0x7f800000u) + 0x00800000u;
        return (acc & 0x80000000u) != 0;
    }
    #if defined(__SSE2__) && !FASTRL_HOST_BIG_ENDIAN
    #include <emmintrin.h>
    #define FASTRL_HAVE_STREAM 1
    #else
    #define FASTRL_HAVE_STREAM 0
    #endif
    /* Copy n floats. With `stream` (an output much larger than the caches, read back only by
       a file write) long rows use non-temporal (streaming) stores where SSE2 is there: they skip
       the read-for-ownership of each output line, as large memcpy/np.copyto do. Without it
       (a staging buffer that a CRC and a file write read back at once) plain stores keep the
       rows in cache for them. */
    static inline void fastrl_copy_f32_le(float *dst, const float *src, int64_t n, int stream) {
    #if FASTRL_HOST_BIG_ENDIAN
        for (int64_t j = 0; j < n; j++) fastrl_store_f32_le(dst + j, src[j]);
    #elif FASTRL_HAVE_STREAM
        int64_t j = 0;
        if (stream && n >= 64) {
            while (((uintptr_t)(dst + j) & 15) && j < n) { dst[j] = src[j]; j++; }
            for (; j + 16 <= n; j += 16) {
                __m128i a = _mm_loadu_si128((const __m128i *)(src + j));
                __m128i b = _mm_loadu_si128((const __m128i *)(src + j + 4));
                __m128i c = _mm_loadu_si128((const __m128i *)(src + j + 8));
                __m128i d = _mm_loadu_si128((const __m128i *)(src + j + 12));
                _mm_stream_si128((__m128i *)(dst + j), a);
                _mm_stream_si128((__m128i *)(dst + j + 4), b);
                _mm_stream_si128((__m128i *)(dst + j + 8), c);
                _mm_stream_si128((__m128i *)(dst + j + 12), d);
            }
        }
        if (j < n) memcpy(dst + j, src + j, (size_t)(n - j) * 4);
    #else
        memcpy(dst, src, (size_t)n * 4);
    #endif
    }
    /* Make streaming stores visible before the buffer is handed back to Python. */
    static inline void fastrl_store_fence(void) {
    #if FASTRL_HAVE_STREAM
        _mm_sfence();
    #endif
    }
    static inline void fastrl_convert_f64_f32_le(float *restrict dst, const double *restrict src,
                                                 int64_t n, int stream) {
        int64_t j = 0;
    #if FASTRL_HAVE_STREAM
        if (stream && n >= 64) {
            while (((uintptr_t)(dst + j) & 15) && j < n) { dst[j] = (float)src[j]; j++; }
            for (; j + 4 <= n; j += 4) {
                __m128 lo = _mm_cvtpd_ps(_mm_loadu_pd(src + j));      /* round to nearest, */
                __m128 hi = _mm_cvtpd_ps(_mm_loadu_pd(src + j + 2));  /* like a C cast      */
                _mm_stream_ps(dst + j, _mm_movelh_ps(lo, hi));
            }
        }
    #endif
        for (; j < n; j++) dst[j] = (float)src[j];
    #if FASTRL_HOST_BIG_ENDIAN
        for (int64_t k = 0; k < n; k++) { float v = dst[k]; fastrl_store_f32_le(dst + k, v); }
    #endif
    }
    """
    void store_f32_le "fastrl_store_f32_le"(float *dst, float v) noexcept nogil
    void store_i32_le "fastrl_store_i32_le"(int32_t *dst, int32_t v) noexcept nogil
    int HOST_BIG_ENDIAN "FASTRL_HOST_BIG_ENDIAN"
    void store_fence "fastrl_store_fence"() noexcept nogil
    bint any_nonfinite_f32 "fastrl_any_nonfinite_f32"(const float *p, int64_t n) noexcept nogil
    void copy_f32_le "fastrl_copy_f32_le"(float *dst, const float *src, int64_t n,
                                          int stream) noexcept nogil
    void convert_f64_f32_le "fastrl_convert_f64_f32_le"(float *dst, const double *src,
                                                        int64_t n, int stream) noexcept nogil
