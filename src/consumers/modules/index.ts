/**
 * The module loader's public surface: load real Linux .ko files through any ExecAllocator.
 * See loader.ts for the load/init/unload sequence and why it follows kernel/module/main.c.
 */
export * from './elf.js';
export * from './elf-build.js';
export * from './layout.js';
export * from './loader.js';
export * from './names.js';
export * from './percpu.js';
export * from './reloc.js';
export * from './symbols.js';
