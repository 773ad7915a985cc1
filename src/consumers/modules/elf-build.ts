/**
 * Writing small ELF64 relocatable objects, and one kernel-style sample module built with it.
 *
 * Why: the loader's hostile-input tests and the `elf` fuzz target must run on every machine,
 * including one without gcc and without the Debian dataset. A module assembled here in a few
 * hundred bytes has what the loader exercises in a real .ko: text, init and exit text, rodata,
 * data, ro_after_init, bss, a per-CPU section, an export (__ksymtab + __ksymtab_strings),
 * __versions, .modinfo, .gnu.linkonce.this_module, local, global, weak and undefined symbols,
 * and RELA sections with every relocation type a distribution module uses (R_X86_64_PLT32,
 * PC32, 32S, 64). The code bytes are real x86-64 (a call, RIP-relative and %gs-relative loads,
 * ret), so the instruction-fetch model can run its functions too.
 *
 * The writer lays the file out as gcc/ld do for `-c` output: ELF header, section contents in
 * order (each at its alignment), then the section header table; symbols sorted locals first
 * (sh_info of .symtab = first global); one `.rela<name>` section per relocated section with
 * SHF_INFO_LINK, sh_link = .symtab and sh_info = its target.
 */
import {
  EM_X86_64,
  ET_REL,
  RELA_BYTES,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHF_WRITE,
  SHN_ABS,
  SHN_UNDEF,
  SHT_NOBITS,
  SHT_PROGBITS,
  SHT_RELA,
  SHT_STRTAB,
  SHT_SYMTAB,
  STB_GLOBAL,
  STB_LOCAL,
  STB_WEAK,
  STT_FUNC,
  STT_NOTYPE,
  STT_OBJECT,
  STT_SECTION,
  SYM_BYTES,
} from './elf.js';
import { R_X86_64_32S, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32 } from './reloc.js';
import { type KernelExport, KernelSymbols } from './symbols.js';

const SHF_INFO_LINK = 0x40;
const EHDR_BYTES = 64;
const SHDR_BYTES = 64;

export interface BuildSection {
  readonly name: string;
  readonly type: number;
  readonly flags: number;
  readonly alignBytes: number;
  /** Contents (not for SHT_NOBITS). */
  readonly data?: Uint8Array;
  /** Size of a SHT_NOBITS section. */
  readonly sizeBytes?: number;
}

export interface BuildSymbol {
  readonly name: string;
  /** Section name, 'UNDEF' or 'ABS'. */
  readonly section: string;
  readonly value: number;
  readonly sizeBytes: number;
  readonly bind: number;
  readonly type: number;
}

export interface BuildReloc {
  /** Name of the section the relocation patches. */
  readonly section: string;
  readonly offset: number;
  readonly type: number;
  /** Symbol name (or a section name, for its STT_SECTION symbol). */
  readonly symbol: string;
  readonly addend: number;
}

export interface BuildObject {
  readonly sections: readonly BuildSection[];
  readonly symbols: readonly BuildSymbol[];
  readonly relocs: readonly BuildReloc[];
}

class StrTab {
  private readonly parts: string[] = [''];
  private length = 1;
  private readonly at = new Map<string, number>([['', 0]]);
  add(s: string): number {
    const known = this.at.get(s);
    if (known !== undefined) return known;
    const off = this.length;
    this.parts.push(s);
    this.length += s.length + 1;
    this.at.set(s, off);
    return off;
  }
  bytes(): Uint8Array {
    return new TextEncoder().encode(`${this.parts.join('\0')}\0`);
  }
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Write an ET_REL x86-64 object. Throws Error on an inconsistent description (a caller bug). */
export function writeRelocatable(obj: BuildObject): Uint8Array {
  const userNames = obj.sections.map((s) => s.name);
  const secIndex = (name: string): number => {
    const i = userNames.indexOf(name);
    if (i < 0) throw new Error(`writeRelocatable: no section ${name}`);
    return i + 1;
  };
  // Symbols: null, a section symbol per user section, then the given ones, locals first.
  const sectionSyms: BuildSymbol[] = obj.sections.map((s) => ({
    name: '',
    section: s.name,
    value: 0,
    sizeBytes: 0,
    bind: STB_LOCAL,
    type: STT_SECTION,
  }));
  const given = [...obj.symbols].sort((a, b) => Number(a.bind !== STB_LOCAL) - Number(b.bind !== STB_LOCAL));
  const syms = [...sectionSyms, ...given];
  const firstGlobal = 1 + syms.findIndex((s) => s.bind !== STB_LOCAL);
  const symIndex = (name: string): number => {
    const i = given.findIndex((s) => s.name === name);
    if (i >= 0) return 1 + sectionSyms.length + i;
    return secIndex(name); // the section symbol (same index as its section)
  };
  const strtab = new StrTab();
  const symtab = new Uint8Array((syms.length + 1) * SYM_BYTES);
  const sv = new DataView(symtab.buffer);
  syms.forEach((s, k) => {
    const o = (k + 1) * SYM_BYTES;
    sv.setUint32(o, s.name === '' ? 0 : strtab.add(s.name), true);
    symtab[o + 4] = (s.bind << 4) | s.type;
    const shndx = s.section === 'UNDEF' ? SHN_UNDEF : s.section === 'ABS' ? SHN_ABS : secIndex(s.section);
    sv.setUint16(o + 6, shndx, true);
    sv.setBigInt64(o + 8, BigInt(s.value), true);
    sv.setBigUint64(o + 16, BigInt(s.sizeBytes), true);
  });
  // One RELA section per relocated section, in section order.
  const relaSections: { name: string; target: number; data: Uint8Array }[] = [];
  for (const target of userNames) {
    const list = obj.relocs.filter((r) => r.section === target);
    if (list.length === 0) continue;
    const data = new Uint8Array(list.length * RELA_BYTES);
    const rv = new DataView(data.buffer);
    list.forEach((r, k) => {
      rv.setBigUint64(k * RELA_BYTES, BigInt(r.offset), true);
      rv.setUint32(k * RELA_BYTES + 8, r.type, true);
      rv.setUint32(k * RELA_BYTES + 12, symIndex(r.symbol), true);
      rv.setBigInt64(k * RELA_BYTES + 16, BigInt(r.addend), true);
    });
    relaSections.push({ name: `.rela${target}`, target: secIndex(target), data });
  }
  const symtabIndex = 1 + userNames.length + relaSections.length;
  const shstrtab = new StrTab();
  interface Out {
    nameOff: number;
    type: number;
    flags: number;
    data: Uint8Array | null;
    sizeBytes: number;
    link: number;
    info: number;
    alignBytes: number;
    entsize: number;
    offset: number;
  }
  const out: Out[] = [];
  const push = (o: Omit<Out, 'offset' | 'nameOff'> & { name: string }): void => {
    const { name, ...rest } = o;
    out.push({ ...rest, nameOff: shstrtab.add(name), offset: 0 });
  };
  for (const s of obj.sections) {
    const nobits = s.type === SHT_NOBITS;
    push({
      name: s.name,
      type: s.type,
      flags: s.flags,
      data: nobits ? null : (s.data ?? new Uint8Array(0)),
      sizeBytes: nobits ? (s.sizeBytes ?? 0) : (s.data?.length ?? 0),
      link: 0,
      info: 0,
      alignBytes: s.alignBytes,
      entsize: 0,
    });
  }
  for (const r of relaSections) {
    push({
      name: r.name,
      type: SHT_RELA,
      flags: SHF_INFO_LINK,
      data: r.data,
      sizeBytes: r.data.length,
      link: symtabIndex,
      info: r.target,
      alignBytes: 8,
      entsize: RELA_BYTES,
    });
  }
  const strtabBytes = strtab.bytes();
  push({
    name: '.symtab',
    type: SHT_SYMTAB,
    flags: 0,
    data: symtab,
    sizeBytes: symtab.length,
    link: symtabIndex + 1,
    info: firstGlobal > 0 ? firstGlobal : syms.length + 1,
    alignBytes: 8,
    entsize: SYM_BYTES,
  });
  push({
    name: '.strtab',
    type: SHT_STRTAB,
    flags: 0,
    data: strtabBytes,
    sizeBytes: strtabBytes.length,
    link: 0,
    info: 0,
    alignBytes: 1,
    entsize: 0,
  });
  const shstrName = shstrtab.add('.shstrtab');
  const shstrBytes = shstrtab.bytes();
  out.push({
    nameOff: shstrName,
    type: SHT_STRTAB,
    flags: 0,
    data: shstrBytes,
    sizeBytes: shstrBytes.length,
    link: 0,
    info: 0,
    alignBytes: 1,
    entsize: 0,
    offset: 0,
  });
  let cursor = EHDR_BYTES;
  for (const o of out) {
    if (o.data === null) continue;
    cursor = alignUp(cursor, Math.max(o.alignBytes, 1));
    o.offset = cursor;
    cursor += o.data.length;
  }
  const shoff = alignUp(cursor, 8);
  const file = new Uint8Array(shoff + (out.length + 1) * SHDR_BYTES);
  const v = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  v.setUint16(16, ET_REL, true);
  v.setUint16(18, EM_X86_64, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(40, BigInt(shoff), true);
  v.setUint16(52, EHDR_BYTES, true);
  v.setUint16(58, SHDR_BYTES, true);
  v.setUint16(60, out.length + 1, true);
  v.setUint16(62, out.length, true);
  out.forEach((o, k) => {
    if (o.data !== null) file.set(o.data, o.offset);
    const h = shoff + (k + 1) * SHDR_BYTES;
    v.setUint32(h, o.nameOff, true);
    v.setUint32(h + 4, o.type, true);
    v.setBigUint64(h + 8, BigInt(o.flags), true);
    v.setBigUint64(h + 24, BigInt(o.offset), true);
    v.setBigUint64(h + 32, BigInt(o.sizeBytes), true);
    v.setUint32(h + 40, o.link, true);
    v.setUint32(h + 44, o.info, true);
    v.setBigUint64(h + 48, BigInt(o.alignBytes), true);
    v.setBigUint64(h + 56, BigInt(o.entsize), true);
  });
  return file;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The kernel exports the sample module links against (link addresses of a 6.1 x86-64 kernel). */
export const SAMPLE_KERNEL_EXPORTS: readonly KernelExport[] = [
  { name: 'kernel_func', value: -0x7edcbaa0, gplOnly: false, namespace: '', crc: 0x1badc0de, percpu: false },
  { name: 'kernel_counter', value: -0x7dcba988, gplOnly: true, namespace: '', crc: null, percpu: false },
];
/** End of the sample kernel's static per-CPU area (module per-CPU data starts here). */
export const SAMPLE_PERCPU_END_BYTES = 0x20000;

export function sampleKernelSymbols(): KernelSymbols {
  return new KernelSymbols(SAMPLE_KERNEL_EXPORTS, SAMPLE_PERCPU_END_BYTES, 'sample kernel (elf-build.ts)');
}

/** A kernel-style module named `name` (see the header); loads against sampleKernelSymbols(). */
export function sampleModuleElf(name = 'sample'): Uint8Array {
  // biome-ignore format: one instruction per line
  const text = Uint8Array.of(
    // sample_func: call kernel_func; mov kernel_counter(%rip),%rax; mov $msg,%rax;
    // mov %gs:sample_pcpu,%rax; ret; int3 x3
    0xe8, 0, 0, 0, 0,
    0x48, 0x8b, 0x05, 0, 0, 0, 0,
    0x48, 0xc7, 0xc0, 0, 0, 0, 0,
    0x65, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0,
    0xc3, 0xcc, 0xcc, 0xcc,
    // sample_helper: lea sample_data(%rip),%rax; ret; int3 x8
    0x48, 0x8d, 0x05, 0, 0, 0, 0,
    0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc,
  );
  const initText = Uint8Array.of(
    0xe8,
    0,
    0,
    0,
    0,
    0x31,
    0xc0,
    0xc3,
    0xcc,
    0xcc,
    0xcc,
    0xcc,
    0xcc,
    0xcc,
    0xcc,
    0xcc,
  );
  const versions = new Uint8Array(64);
  new DataView(versions.buffer).setUint32(0, 0x1badc0de, true);
  versions.set(enc('kernel_func'), 8);
  const modinfo = enc(`license=GPL\0depends=\0name=${name}\0vermagic=6.1.0 SMP mod_unload modversions \0`);
  // biome-ignore format: one section per line
  const sections: BuildSection[] = [
    { name: '.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, alignBytes: 16, data: text },
    { name: '.init.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, alignBytes: 16, data: initText },
    { name: '.exit.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, alignBytes: 1, data: Uint8Array.of(0xc3) },
    { name: '.rodata', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 8, data: enc('sample says hi\0\0') },
    { name: '.data', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 8, data: new Uint8Array(16) },
    { name: '.data..ro_after_init', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 8, data: new Uint8Array(8) },
    { name: '.bss', type: SHT_NOBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 8, sizeBytes: 64 },
    { name: '.data..percpu', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 8, data: new Uint8Array(8) },
    { name: '__ksymtab', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 4, data: new Uint8Array(12) },
    { name: '__ksymtab_strings', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 1, data: enc('sample_func\0') },
    { name: '__versions', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 32, data: versions },
    { name: '.modinfo', type: SHT_PROGBITS, flags: SHF_ALLOC, alignBytes: 1, data: modinfo },
    { name: '.gnu.linkonce.this_module', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, alignBytes: 64, data: new Uint8Array(0x380) },
    { name: '.comment', type: SHT_PROGBITS, flags: 0, alignBytes: 1, data: enc('GCC: (execmem elf-build)\0') },
  ];
  const local = (n: string, section: string, value: number, size: number, type: number): BuildSymbol => ({
    name: n,
    section,
    value,
    sizeBytes: size,
    bind: STB_LOCAL,
    type,
  });
  const global = (
    n: string,
    section: string,
    value: number,
    size: number,
    type: number,
    bind = STB_GLOBAL,
  ) => ({
    name: n,
    section,
    value,
    sizeBytes: size,
    bind,
    type,
  });
  const symbols: BuildSymbol[] = [
    local('sample_helper', '.text', 32, 16, STT_FUNC),
    local('sample_data', '.data', 0, 16, STT_OBJECT),
    local('sample_bss', '.bss', 0, 64, STT_OBJECT),
    local('sample_pcpu', '.data..percpu', 0, 8, STT_OBJECT),
    local('__kstrtab_sample_func', '__ksymtab_strings', 0, 12, STT_OBJECT),
    global('sample_func', '.text', 0, 32, STT_FUNC),
    global('init_module', '.init.text', 0, 8, STT_FUNC),
    global('cleanup_module', '.exit.text', 0, 1, STT_FUNC),
    global('__this_module', '.gnu.linkonce.this_module', 0, 0x380, STT_OBJECT),
    global('__ksymtab_sample_func', '__ksymtab', 0, 12, STT_OBJECT),
    global('kernel_func', 'UNDEF', 0, 0, STT_NOTYPE),
    global('kernel_counter', 'UNDEF', 0, 0, STT_NOTYPE),
    global('maybe_func', 'UNDEF', 0, 0, STT_NOTYPE, STB_WEAK),
  ];
  const relocs: BuildReloc[] = [
    { section: '.text', offset: 1, type: R_X86_64_PLT32, symbol: 'kernel_func', addend: -4 },
    { section: '.text', offset: 8, type: R_X86_64_PC32, symbol: 'kernel_counter', addend: -4 },
    { section: '.text', offset: 15, type: R_X86_64_32S, symbol: '.rodata', addend: 0 },
    { section: '.text', offset: 24, type: R_X86_64_32S, symbol: 'sample_pcpu', addend: 0 },
    { section: '.text', offset: 35, type: R_X86_64_PC32, symbol: 'sample_data', addend: -4 },
    { section: '.init.text', offset: 1, type: R_X86_64_PLT32, symbol: 'sample_func', addend: -4 },
    { section: '.data', offset: 0, type: R_X86_64_64, symbol: '.rodata', addend: 0 },
    { section: '.data', offset: 8, type: R_X86_64_64, symbol: 'maybe_func', addend: 0 },
    { section: '.data..ro_after_init', offset: 0, type: R_X86_64_64, symbol: 'sample_func', addend: 0 },
    { section: '__ksymtab', offset: 0, type: R_X86_64_PC32, symbol: 'sample_func', addend: 0 },
    { section: '__ksymtab', offset: 4, type: R_X86_64_PC32, symbol: '__kstrtab_sample_func', addend: 0 },
    {
      section: '.gnu.linkonce.this_module',
      offset: 0x138,
      type: R_X86_64_64,
      symbol: 'init_module',
      addend: 0,
    },
    {
      section: '.gnu.linkonce.this_module',
      offset: 0x340,
      type: R_X86_64_64,
      symbol: 'cleanup_module',
      addend: 0,
    },
  ];
  return writeRelocatable({ sections, symbols, relocs });
}
