# Little-endian stores that do not depend on the host's byte order. On little-endian hosts (all
# the platforms fastrl is built for in practice) they compile to plain stores the C compiler can
# vectorize; on big-endian hosts they byte-swap, so the files are the same everywhere.
from libc.stdint cimport int32_t

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
    """
    void store_f32_le "fastrl_store_f32_le"(float *dst, float v) noexcept nogil
    void store_i32_le "fastrl_store_i32_le"(int32_t *dst, int32_t v) noexcept nogil
    int HOST_BIG_ENDIAN "FASTRL_HOST_BIG_ENDIAN"
