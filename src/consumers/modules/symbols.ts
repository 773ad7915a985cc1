/**
 * The kernel's exported symbols, as a module loader sees them.
 *
 * Why exports and not every symbol: Linux resolves a module's undefined symbols only against
 * EXPORT_SYMBOL*'d ones (kernel/module/main.c find_symbol(): the kernel's __ksymtab and
 * __ksymtab_gpl, then each live module's), so that is the table built here. Two sources:
 *
 * - `fromVmlinux`: the decompressed kernel image (an ET_EXEC ELF with section headers; Debian's
 *   vmlinuz carries it). Its __ksymtab / __ksymtab_gpl entries are 6.1's `struct kernel_symbol`
 *   with CONFIG_HAVE_ARCH_PREL32_RELOCATIONS: three int32 offsets relative to the field itself
 *   (value, name, namespace; include/linux/export.h, offset_to_ptr()), and __kcrctab holds the
 *   modversions CRCs in the same order. This is exact: names, addresses, GPL-only-ness,
 *   namespaces and CRCs are the kernel's own.
 * - `fromSystemMap`: a real System.map (Debian ships only a stub in the image package; the real
 *   one is in the -dbg package). A name X is exported when `__ksymtab_X` exists; it is GPL-only
 *   when that entry lies in [__start___ksymtab_gpl, __stop___ksymtab_gpl). Namespaces and CRCs
 *   are not in System.map, so they are reported as unknown and not checked.
 *
 * KASLR: symbol values are link addresses; the runtime value is link + kaslrOffsetBytes, except
 * for per-CPU symbols (x86-64 links the per-CPU section at 0, CONFIG_KALLSYMS_ABSOLUTE_PERCPU),
 * which are offsets and do not move. Values are signed 64-bit numbers (elf.ts explains why).
 */
import { assert } from '../../base/assert.js';
import {
  ElfError,
  type ElfFile,
  type ElfSection,
  ET_EXEC,
  findSection,
  parseElf,
  SHF_ALLOC,
  SHT_NOBITS,
} from './elf.js';
import { type NameLimit, SYMBOL_NAME_LIMIT } from './names.js';

export interface KernelExport {
  readonly name: string;
  /** Link-time value (signed 64-bit); per-CPU symbols are offsets into the per-CPU area. */
  readonly value: number;
  readonly gplOnly: boolean;
  /** Symbol namespace ('' for none), or null when the source cannot tell. */
  readonly namespace: string | null;
  /** modversions CRC, or null when unknown. */
  readonly crc: number | null;
  readonly percpu: boolean;
}

/**
 * x86-64 links the per-CPU section at 0 and reaches it with 32-bit %gs displacements, so the end
 * of the static per-CPU area is an offset below 2^31 (6.1's is 0x34000 on Debian's cloud kernel).
 */
export const MAX_PERCPU_END_BYTES = 2 ** 31 - 1;

function checkPercpuEnd(endBytes: number, source: string): number {
  if (!(Number.isSafeInteger(endBytes) && endBytes >= 0 && endBytes <= MAX_PERCPU_END_BYTES)) {
    throw new ElfError(
      'ESYMTAB',
      `${source}: the per-CPU area ends at ${Number.isNaN(endBytes) ? 'an unrepresentable value' : signedToHex(endBytes)}, not an offset in [0, 2^31)`,
    );
  }
  return endBytes;
}

export class KernelSymbols {
  private readonly byName: Map<string, KernelExport>;

  constructor(
    exports: readonly KernelExport[],
    /** End of the static per-CPU area (where module per-CPU reservations start). */
    readonly perCpuEndBytes: number,
    /** Where the table came from, for reports. */
    readonly source: string,
    readonly kaslrOffsetBytes = 0,
  ) {
    assert(
      Number.isSafeInteger(perCpuEndBytes) && perCpuEndBytes >= 0 && perCpuEndBytes <= MAX_PERCPU_END_BYTES,
      `per-CPU end ${perCpuEndBytes} is not a per-CPU offset (the sources below check it)`,
    );
    this.byName = new Map(exports.map((e) => [e.name, e]));
  }

  get count(): number {
    return this.byName.size;
  }

  get(name: string): KernelExport | undefined {
    return this.byName.get(name);
  }

  /** Runtime value of an export (link value + KASLR offset, per-CPU symbols unmoved). */
  runtimeValue(e: KernelExport): number {
    return e.percpu ? e.value : e.value + this.kaslrOffsetBytes;
  }

  /** The same table with another KASLR offset (the kernel image placed elsewhere). */
  withKaslrOffset(kaslrOffsetBytes: number): KernelSymbols {
    if (!Number.isInteger(kaslrOffsetBytes))
      throw new RangeError(`KASLR offset must be an integer, got ${kaslrOffsetBytes}`);
    return new KernelSymbols([...this.byName.values()], this.perCpuEndBytes, this.source, kaslrOffsetBytes);
  }

  exports(): IterableIterator<KernelExport> {
    return this.byName.values();
  }

  static fromVmlinux(bytes: Uint8Array, source = 'vmlinux __ksymtab'): KernelSymbols {
    const elf = parseElf(bytes, { types: [ET_EXEC], symbols: false });
    const pcpu = elf.sections.find((s) => s.name === '.data..percpu');
    const pcpuStart = pcpu ? pcpu.addr : 0;
    const pcpuEnd = pcpu ? pcpu.addr + pcpu.sizeBytes : 0;
    const out: KernelExport[] = [];
    readKsymtab(elf, '__ksymtab', '__kcrctab', false, pcpuStart, pcpuEnd, out);
    readKsymtab(elf, '__ksymtab_gpl', '__kcrctab_gpl', true, pcpuStart, pcpuEnd, out);
    if (out.length === 0) throw new ElfError('ESHDR', 'vmlinux has no __ksymtab entries');
    return new KernelSymbols(out, checkPercpuEnd(pcpuEnd, source), source);
  }

  static fromSystemMap(text: string, source = 'System.map'): KernelSymbols {
    const all = new Map<string, number>();
    for (const line of text.split('\n')) {
      const parts = line.trim().split(/\s+/);
      if (parts.length < 3 || parts[0].length !== 16) continue;
      const v = hexToSigned(parts[0]);
      if (Number.isNaN(v)) continue;
      all.set(parts[2], v);
    }
    const gplStart = all.get('__start___ksymtab_gpl');
    const gplStop = all.get('__stop___ksymtab_gpl');
    const pcpuStart = all.get('__per_cpu_start') ?? 0;
    const pcpuEnd = all.get('__per_cpu_end') ?? 0;
    const out: KernelExport[] = [];
    for (const [name, entryVa] of all) {
      if (!name.startsWith('__ksymtab_')) continue;
      const sym = name.slice('__ksymtab_'.length);
      const value = all.get(sym);
      if (value === undefined) continue;
      const gplOnly =
        gplStart !== undefined && gplStop !== undefined && entryVa >= gplStart && entryVa < gplStop;
      const percpu = value >= pcpuStart && value < pcpuEnd;
      out.push({ name: sym, value, gplOnly, namespace: null, crc: null, percpu });
    }
    if (out.length === 0) {
      throw new ElfError(
        'ESYMTAB',
        `${source} lists no __ksymtab_* entries (a stub? Debian ships the real one in the -dbg package)`,
      );
    }
    return new KernelSymbols(out, checkPercpuEnd(pcpuEnd, source), source);
  }
}

/** 16 hex digits to a signed 64-bit value in a double (NaN when not exact). */
export function hexToSigned(hex: string): number {
  const hi = Number.parseInt(hex.slice(0, 8), 16);
  const lo = Number.parseInt(hex.slice(8), 16);
  if (Number.isNaN(hi) || Number.isNaN(lo)) return Number.NaN;
  const his = hi | 0;
  if (his >= 0x200000 || his < -0x200000) return Number.NaN;
  return his * 4294967296 + lo;
}

/** A signed 64-bit value as 16 hex digits. */
export function signedToHex(v: number): string {
  const big = BigInt.asUintN(64, BigInt(v));
  return big.toString(16).padStart(16, '0');
}

function sectionAt(elf: ElfFile, addr: number): ElfSection | undefined {
  for (const s of elf.sections) {
    if ((s.flags & SHF_ALLOC) === 0 || s.type === SHT_NOBITS) continue;
    if (addr >= s.addr && addr < s.addr + s.sizeBytes) return s;
  }
  return undefined;
}

function stringAt(elf: ElfFile, addr: number, what: string, limit?: NameLimit): string {
  const s = sectionAt(elf, addr);
  if (!s) throw new ElfError('ESTRTAB', `${what}: address ${signedToHex(addr)} is in no section`);
  const start = s.offset + (addr - s.addr);
  return elf.names.read(elf.bytes, start, s.offset + s.sizeBytes, `${what} in ${s.name}`, limit);
}

function readKsymtab(
  elf: ElfFile,
  tabName: string,
  crcName: string,
  gplOnly: boolean,
  pcpuStart: number,
  pcpuEnd: number,
  out: KernelExport[],
): void {
  const tab = findSection(elf, tabName);
  if (!tab) return;
  if (tab.sizeBytes % 12 !== 0)
    throw new ElfError('ESHDR', `${tabName} size ${tab.sizeBytes} is not a multiple of 12`);
  const crcs = findSection(elf, crcName);
  const n = tab.sizeBytes / 12;
  if (crcs && crcs.sizeBytes !== n * 4)
    throw new ElfError('ESHDR', `${crcName} has ${crcs.sizeBytes / 4} CRCs for ${n} symbols`);
  for (let i = 0; i < n; i++) {
    const off = tab.offset + i * 12;
    const at = tab.addr + i * 12;
    const value = at + elf.view.getInt32(off, true);
    const name = stringAt(
      elf,
      at + 4 + elf.view.getInt32(off + 4, true),
      `${tabName}[${i}] name`,
      SYMBOL_NAME_LIMIT,
    );
    const nsOff = elf.view.getInt32(off + 8, true);
    const namespace = nsOff === 0 ? '' : stringAt(elf, at + 8 + nsOff, `${tabName}[${i}] namespace`);
    const crc = crcs ? elf.view.getUint32(crcs.offset + i * 4, true) : null;
    out.push({ name, value, gplOnly, namespace, crc, percpu: value >= pcpuStart && value < pcpuEnd });
  }
}
