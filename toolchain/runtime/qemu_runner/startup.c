/* Reset for the measurement runner on QEMU's MPS2 boards: a vector table at 0, zeroed .bss,
   newlib's semihosting I/O, C++ constructors, main, and the exit code back to the host. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern uint32_t __stack_top, __bss_start__, __bss_end__;
extern void initialise_monitor_handles(void);
extern void __libc_init_array(void);
extern int main(void);

void moofa_reset(void) {
  memset(&__bss_start__, 0, (char*)&__bss_end__ - (char*)&__bss_start__);
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

/* A fault ends the run at once through semihosting (the C library may be what faulted): it
   prints one line and stops QEMU with a run-time-error exit, instead of looping or locking up. */
static void moofa_fault(void) {
  static const char msg[] = "moofa-runner: hard fault\n";
  register uint32_t op __asm__("r0") = 0x04; /* SYS_WRITE0 */
  register const void* arg __asm__("r1") = msg;
  __asm__ volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
  op = 0x18;                          /* SYS_EXIT */
  arg = (const void*)0x20023;         /* ADP_Stopped_RunTimeErrorUnknown */
  __asm__ volatile("bkpt 0xab" : "+r"(op) : "r"(arg) : "memory");
  for (;;) {
  }
}

__attribute__((section(".vectors"), used)) static const void* const moofa_vectors[16] = {
    &__stack_top, (void*)moofa_reset, (void*)moofa_fault, (void*)moofa_fault, (void*)moofa_fault,
    (void*)moofa_fault, (void*)moofa_fault, 0, 0, 0, 0, (void*)moofa_fault, (void*)moofa_fault, 0,
    (void*)moofa_fault, (void*)moofa_fault};
