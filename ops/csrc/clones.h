// Function multi-versioning for the CPU kernels: a loop marked DISTILL_CLONES is compiled for
// AVX-512, AVX2 (+ FMA) and baseline x86-64 (GCC/Clang target_clones), and the loader picks the
// clone for the CPU it runs on, since the build cannot assume the machine's vector width.
#pragma once

#if defined(__x86_64__) && !defined(_WIN32) && !defined(__clang__) && __GNUC__ >= 12
// x86-64-v3 / v4 as clone targets need GCC 12 (GCC PR101696)
#define DISTILL_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && !defined(_WIN32) && (defined(__GNUC__) || defined(__clang__))
#define DISTILL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DISTILL_CLONES
#endif
#define DISTILL_INLINE inline __attribute__((always_inline))
