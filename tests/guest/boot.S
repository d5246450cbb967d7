/* ferry-test-guest entry: a multiboot (v1) header and a stack, then guest_main(magic, mbi).
 * The loader (QEMU's -kernel on pc/q35, or GRUB) enters in 32-bit protected mode, paging off,
 * interrupts off, EAX = 0x2BADB002, EBX = physical address of the multiboot information. */
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003 /* bit 0: page-aligned modules; bit 1: memory info */

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .text
        .globl _start
_start:
        cli
        cld
        movl $stack_top, %esp
        xorl %ebp, %ebp
        pushl %ebx
        pushl %eax
        call guest_main
1:      cli
        hlt
        jmp 1b

        .bss
        .align 16
stack:
        .skip 16384
stack_top:

        .section .note.GNU-stack, "", @progbits
