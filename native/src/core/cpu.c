/* cpu.c — CPU features detected at run time, so one build runs on any CPU of the architecture. */
#include <unistd.h>

#include "common.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

static void detect_x86(edge_cpu_features *f) {
    unsigned a, b, c, d;
    f->x86_64 = 1;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, avx = (c >> 28) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int ymm_os = (xcr0 & 0x6) == 0x6;    /* XMM and YMM state saved by the OS */
    int zmm_os = (xcr0 & 0xe6) == 0xe6;  /* plus opmask and ZMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int avx512vnni = (c >> 11) & 1;
    f->avx2 = avx && avx2 && ymm_os;
    f->fma = fma && ymm_os;
    f->f16c = f16c && ymm_os;
    f->avx512f = avx512f && zmm_os;
    f->avx512bw = f->avx512f && avx512bw;
    f->avx512vl = f->avx512f && avx512vl;
    f->avx512vnni = f->avx512f && avx512vnni;
}
#endif

#if defined(__aarch64__)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>

/* A macOS hw.optional.* flag; `absent` where the key does not exist (it does from macOS 12). */
static int apple_feature(const char *name, int absent) {
    int value = 0;
    size_t len = sizeof value;
    if (sysctlbyname(name, &value, &len, NULL, 0) != 0) return absent;
    return value != 0;
}
#endif
static void detect_arm64(edge_cpu_features *f) {
    f->aarch64 = 1;
    f->neon = 1; /* Advanced SIMD is mandatory on AArch64 */
#if defined(__linux__)
    f->dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    /* every Apple Silicon Mac (M1 and later) has it: assumed where macOS is too old to say */
    f->dotprod = apple_feature("hw.optional.arm.FEAT_DotProd", 1);
#endif
}
#endif

EDGE_API edge_status edge_cpu_detect(edge_cpu_features *out) {
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_cpu_detect: out is NULL");
    memset(out, 0, sizeof *out);
#if defined(__x86_64__) || defined(_M_X64)
    detect_x86(out);
#elif defined(__aarch64__)
    detect_arm64(out);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    out->n_cores = n > 0 ? (int)n : 1;
    return EDGE_OK;
}
