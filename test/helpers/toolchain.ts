/**
 * The host toolchain as the module tests use it (elf-reader, modules-loader, modules-dataset,
 * reloc-oracle): where the C fixtures live, the gcc flags that make a kernel-style relocatable
 * object, whether a tool is installed, and the fake System.map the fixtures link against.
 *
 * Why one place: these files used to carry identical copies. The flags decide which relocation
 * types gcc emits (-mcmodel=kernel: R_X86_64_32S / PLT32 / PC32 as in arch/x86/Makefile's
 * KBUILD_CFLAGS; -fno-pic, -mno-red-zone), so the loader tests and the GNU ld oracle must compile
 * the very same object; one list keeps them from drifting apart.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';

/** test/fixtures/c, relative to the project root (node --test runs from there). */
export const FIXTURES_C = join(process.cwd(), 'test', 'fixtures', 'c');

/** gcc flags for a kernel-style x86-64 object (`-c`: relocatable, as a .ko is). */
export const KERNEL_CFLAGS: readonly string[] = [
  '-O2',
  '-mcmodel=kernel',
  '-fno-pic',
  '-mno-red-zone',
  '-ffreestanding',
  '-fno-asynchronous-unwind-tables',
  '-fno-common',
  '-c',
];

/** Whether `tool --version` runs and exits 0 (asked afresh on every call, nothing cached). */
export function hasTool(tool: string): boolean {
  return spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** gcc KERNEL_CFLAGS [defines] test/fixtures/c/<src> -o <outPath>; throws if gcc fails. */
export function compileFixture(src: string, outPath: string, defines: readonly string[] = []): void {
  execFileSync('gcc', [...KERNEL_CFLAGS, ...defines, join(FIXTURES_C, src), '-o', outPath]);
}

/**
 * A System.map with the symbols the fixtures import (kernel_counter, kernel_func, low_sym), each
 * with its __ksymtab_ entry so it counts as exported, and the per-CPU section bounds.
 */
export const FAKE_SYSTEM_MAP = [
  '0000000000000000 D __per_cpu_start',
  '0000000000020000 D __per_cpu_end',
  'ffffffff82345678 D kernel_counter',
  'ffffffff82000000 r __ksymtab_kernel_counter',
  'ffffffff81234560 T kernel_func',
  'ffffffff8200000c r __ksymtab_kernel_func',
  '0000000000012340 D low_sym',
  'ffffffff82000018 r __ksymtab_low_sym',
].join('\n');
