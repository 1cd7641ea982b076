/* A spin-wait hint: tells the core a loop is waiting on memory another
 * thread or process writes (PAUSE on x86, YIELD on arm64; nothing
 * elsewhere). Header-only: libtandem uses it too. */
#ifndef TDM_COMMON_CPU_RELAX_H
#define TDM_COMMON_CPU_RELAX_H

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#endif
