/**
 * A small module compiled "with -mrecord-mcount", written with the project's ELF writer, so the
 * ftrace tests run without gcc and without the Debian dataset: `n` functions that each start with
 * `call __fentry__` (e8 + R_X86_64_PLT32 __fentry__-4, as gcc emits it), an init function with one
 * too, and `__mcount_loc` holding one R_X86_64_64 against the text section per site (as the .ko
 * files of the Debian package carry them). Options break it the ways the tests need.
 */
import {
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_WRITE,
  SHT_PROGBITS,
  STB_GLOBAL,
  STT_FUNC,
  STT_NOTYPE,
  STT_OBJECT,
} from '../../src/consumers/modules/elf.js';
import {
  type BuildReloc,
  type BuildSection,
  type BuildSymbol,
  SAMPLE_KERNEL_EXPORTS,
  SAMPLE_PERCPU_END_BYTES,
  writeRelocatable,
} from '../../src/consumers/modules/elf-build.js';
import { R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32 } from '../../src/consumers/modules/reloc.js';
import { KernelSymbols } from '../../src/consumers/modules/symbols.js';

/** __fentry__ and __x86_return_thunk at their link addresses in Debian's 6.1.0-57 vmlinux. */
export const FENTRY_LINK = -0x7ef948d0;
export const RETURN_THUNK_LINK = -0x7e1fe110;

export function ftraceKernelSymbols(): KernelSymbols {
  return new KernelSymbols(
    [
      ...SAMPLE_KERNEL_EXPORTS,
      { name: '__fentry__', value: FENTRY_LINK, gplOnly: false, namespace: '', crc: null, percpu: false },
      {
        name: '__x86_return_thunk',
        value: RETURN_THUNK_LINK,
        gplOnly: false,
        namespace: '',
        crc: null,
        percpu: false,
      },
    ],
    SAMPLE_PERCPU_END_BYTES,
    'ftrace test kernel (test/helpers/ftrace-module.ts)',
  );
}

/** Bytes per function: call __fentry__; xor %eax,%eax; ret; int3 padding. */
export const FN_BYTES = 16;

export interface FtraceModuleOptions {
  /** Functions in .text, named `${prefix}_<i>`; default 4. */
  readonly functions?: number;
  readonly prefix?: string;
  /** Function `i` starts with 5 other bytes instead of `call __fentry__` (an ftrace_bug at load). */
  readonly notACallAt?: number;
  /** The __mcount_loc relocation of function 0 gets this type instead of R_X86_64_64. */
  readonly mcountRelocType?: number;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

export function ftraceModuleElf(name: string, opts: FtraceModuleOptions = {}): Uint8Array {
  const n = opts.functions ?? 4;
  const prefix = opts.prefix ?? name;
  const text = new Uint8Array(n * FN_BYTES).fill(0xcc);
  for (let i = 0; i < n; i++) {
    text.set(i === opts.notACallAt ? [0x66, 0x90, 0x66, 0x90, 0x90] : [0xe8, 0, 0, 0, 0], i * FN_BYTES);
    text.set([0x31, 0xc0, 0xc3], i * FN_BYTES + 5);
  }
  const initText = Uint8Array.of(0xe8, 0, 0, 0, 0, 0x31, 0xc0, 0xc3);
  const modinfo = enc(`license=GPL\0depends=\0name=${name}\0vermagic=6.1.0 SMP mod_unload modversions \0`);
  // biome-ignore format: one section per line
  const sections: BuildSection[] = [
    { name: '.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, alignBytes: 16, data: text },
    { name: '.init.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, alignBytes: 16, data: initText },
    { name: '.rodata', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 8, data: enc('ftrace test\0') },
    { name: '__mcount_loc', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 1, data: new Uint8Array(8 * (n + 1)) },
    { name: '.data', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 8, data: new Uint8Array(8) },
    { name: '.modinfo', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 1, data: modinfo },
    { name: '.gnu.linkonce.this_module', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 64, data: new Uint8Array(0x380) },
  ];
  const fn = (nm: string, section: string, value: number, size: number): BuildSymbol => ({
    name: nm,
    section,
    value,
    sizeBytes: size,
    bind: STB_GLOBAL,
    type: STT_FUNC,
  });
  const symbols: BuildSymbol[] = [
    ...Array.from({ length: n }, (_, i) => fn(`${prefix}_${i}`, '.text', i * FN_BYTES, 8)),
    fn('init_module', '.init.text', 0, 8),
    {
      name: '__this_module',
      section: '.gnu.linkonce.this_module',
      value: 0,
      sizeBytes: 0x380,
      bind: STB_GLOBAL,
      type: STT_OBJECT,
    },
    { name: '__fentry__', section: 'UNDEF', value: 0, sizeBytes: 0, bind: STB_GLOBAL, type: STT_NOTYPE },
  ];
  const relocs: BuildReloc[] = [];
  for (let i = 0; i < n; i++) {
    if (i !== opts.notACallAt)
      relocs.push({
        section: '.text',
        offset: i * FN_BYTES + 1,
        type: R_X86_64_PLT32,
        symbol: '__fentry__',
        addend: -4,
      });
    relocs.push({
      section: '__mcount_loc',
      offset: 8 * i,
      type: i === 0 && opts.mcountRelocType !== undefined ? opts.mcountRelocType : R_X86_64_64,
      symbol: '.text',
      addend: i * FN_BYTES,
    });
  }
  relocs.push({ section: '.init.text', offset: 1, type: R_X86_64_PLT32, symbol: '__fentry__', addend: -4 });
  relocs.push({ section: '__mcount_loc', offset: 8 * n, type: R_X86_64_64, symbol: '.init.text', addend: 0 });
  relocs.push({
    section: '.gnu.linkonce.this_module',
    offset: 0x138,
    type: R_X86_64_64,
    symbol: 'init_module',
    addend: 0,
  });
  return writeRelocatable({ sections, symbols, relocs });
}

export { R_X86_64_PC32 };
