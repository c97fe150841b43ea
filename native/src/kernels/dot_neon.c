/* dot_neon.c — ARMv8.0 Advanced SIMD kernels (int8 products via smull/smlal + sadalp: every arm64 core);
 * see dot_neon_impl.h. Compiled for arm64 only, without the dotprod extension. */
#define EDGE_NEON_DOTPROD 0
#define EDGE_NEON_TABLE edge_kernels_neon
#define EDGE_NEON_ISA EDGE_ISA_NEON
#define EDGE_NEON_NAME "neon"
#include "dot_neon_impl.h"
