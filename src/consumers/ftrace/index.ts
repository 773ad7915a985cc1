/**
 * The ftrace consumer's public surface: real `__mcount_loc` call sites of loaded modules, ops
 * with trampolines allocated as type `ftrace` (or BPF trampoline images as type `bpf`), and live
 * patching with the x86 text_poke_bp protocol. See ftrace.ts for the Linux functions followed.
 */
export * from './errors.js';
export * from './ftrace.js';
export * from './host-run.js';
export * from './mcount.js';
export * from './module-init.js';
export * from './patch.js';
export * from './records.js';
export * from './x86.js';
