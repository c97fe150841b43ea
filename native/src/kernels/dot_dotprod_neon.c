/* dot_dotprod_neon.c — ARMv8.2 dotprod kernels (one sdot per 16 int8 products: Cortex-A55/A76 and later,
 * Neoverse, every Apple Silicon core); see dot_neon_impl.h. Compiled for arm64 only, with +dotprod; chosen at
 * run time when the CPU reports it (cpu.c). */
#define EDGE_NEON_DOTPROD 1
#define EDGE_NEON_TABLE edge_kernels_neon_dotprod
#define EDGE_NEON_ISA EDGE_ISA_NEON_DOTPROD
#define EDGE_NEON_NAME "neon_dotprod"
#include "dot_neon_impl.h"
