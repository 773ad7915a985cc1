/**
 * The BPF consumer's public surface: real classic programs (libpcap, libseccomp) and eBPF objects
 * in, the kernel's conversion and x86-64 JIT (Linux 6.1.192), images through execmem type `bpf`,
 * and a host runner that executes them. See program.ts for the path and why it is in that order.
 */
export * from './classic.js';
export * from './convert.js';
export * from './elf-bpf.js';
export * from './errors.js';
export * from './host-run.js';
export * from './image.js';
export * from './insn.js';
export * from './interp.js';
export * from './jit-x86.js';
export * from './program.js';
export * from './systemd.js';
