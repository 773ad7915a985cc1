/**
 * arm64 module PLTs: sized at layout time, emitted at relocation time, as Linux's
 * arch/arm64/kernel/module-plts.c does (6.1; unchanged in substance through 6.12).
 *
 * Why: a CALL26/JUMP26 reaches +-128 MiB. Where the allocator puts module text decides whether
 * calls into the kernel (and into other modules) reach directly or need a PLT entry (12 bytes:
 * ADRP x16 / ADD x16 / BR x16), so the number of PLT entries is a cost of placement that x86 runs
 * do not show. Linux must reserve the room before it knows where the module lands:
 *
 * - module_frob_arch_sections() (before layout): the module's placeholder sections `.plt`,
 *   `.init.plt` and `.text.ftrace_trampoline` (1-byte PROGBITS put there by the arch's
 *   module.lds) become NOBITS, SHF_EXECINSTR | SHF_ALLOC; .plt/.init.plt get alignment
 *   L1_CACHE_BYTES (64) and (count + 1) * 12 bytes, the trampoline section NR_FTRACE_PLTS (1 in
 *   6.1) * 12 bytes aligned to 4. Missing PLT sections: "%s: module PLT section(s) missing".
 * - The count, per RELA section whose target is executable (count_plts()): with
 *   CONFIG_RANDOMIZE_BASE (Debian: y), every CALL26/JUMP26 against a symbol not defined in the
 *   target section itself, counting a (type, symbol, addend) once when the addend is 0 (the
 *   relocations were partitioned and sorted first: partition_branch_plt_relas() moves the
 *   branch relocations to the front, sort() orders them by type, symbol index, addend, and
 *   apply_relocate_add() later sees that same order). Targets in ".init*" sections count into
 *   .init.plt. (The 843419 erratum slack is added only on CPUs with that erratum; see
 *   reloc-arm64.ts.)
 * - module_emit_plt_entry() (at relocation, only for a branch that overflowed): the entry goes
 *   into the PLT of the memory the branch is in (core or init); it is a duplicate of the
 *   previous entry when they reach the same target (plt_entries_equal()), then that one is used.
 *   Emitting more entries than counted is a WARN and -ENOEXEC.
 */
import {
  type ElfFile,
  type ElfSection,
  RELA_BYTES,
  SHF_ALLOC,
  SHF_EXECINSTR,
  SHT_NOBITS,
  SHT_RELA,
  s64,
} from './elf.js';
import { ModuleFormatError } from './layout.js';
import { R_AARCH64_CALL26, R_AARCH64_JUMP26 } from './reloc-arm64.js';

export const PLT_ENTRY_BYTES = 12;
/** L1_CACHE_BYTES on arm64 (arch/arm64/include/asm/cache.h). */
const PLT_ALIGN_BYTES = 64;
/** NR_FTRACE_PLTS in 6.1's arch/arm64/include/asm/module.h (FTRACE_PLT_IDX only). */
const NR_FTRACE_PLTS = 1;

export interface Arm64Plts {
  readonly coreIndex: number;
  readonly initIndex: number;
  readonly coreMaxEntries: number;
  readonly initMaxEntries: number;
  /** Per RELA section index: entry order after partition + sort (absent: file order). */
  readonly order: ReadonlyMap<number, Uint32Array>;
}

interface Entry {
  readonly i: number;
  readonly type: number;
  readonly sym: number;
  readonly addend: number;
}

function readEntry(elf: ElfFile, rela: ElfSection, i: number): Entry {
  const e = rela.offset + i * RELA_BYTES;
  return {
    i,
    type: elf.view.getUint32(e + 8, true),
    sym: elf.view.getUint32(e + 12, true),
    addend: s64(elf.view, e + 16),
  };
}

function cmpRela(a: Entry, b: Entry): number {
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.sym !== b.sym) return a.sym < b.sym ? -1 : 1;
  if (a.addend !== b.addend) return a.addend < b.addend ? -1 : 1;
  return 0;
}

/**
 * module_frob_arch_sections(): the file with its PLT sections sized, and the PLT bookkeeping.
 * Returns a new ElfFile (sections replaced); the bytes are not touched.
 */
export function frobArm64Sections(elf: ElfFile, moduleName: string): { elf: ElfFile; plts: Arm64Plts } {
  let coreIndex = 0;
  let initIndex = 0;
  let tramp = 0;
  for (const s of elf.sections) {
    if (s.name === '.plt') coreIndex = s.index;
    else if (s.name === '.init.plt') initIndex = s.index;
    else if (s.name === '.text.ftrace_trampoline') tramp = s.index;
  }
  if (!coreIndex || !initIndex)
    throw new ModuleFormatError('ENOEXEC', `${moduleName}: module PLT section(s) missing`);
  if (!elf.symtabIndex)
    throw new ModuleFormatError('ENOEXEC', `${moduleName}: module symtab section missing`);
  const order = new Map<number, Uint32Array>();
  let corePlts = 0;
  let initPlts = 0;
  for (const rela of elf.sections) {
    if (rela.type !== SHT_RELA || rela.info >= elf.sections.length) continue;
    const dst = elf.sections[rela.info];
    if ((dst.flags & SHF_EXECINSTR) === 0) continue;
    const n = Math.floor(rela.sizeBytes / RELA_BYTES);
    const entries: Entry[] = [];
    for (let i = 0; i < n; i++) entries.push(readEntry(elf, rela, i));
    const needsPlt = (e: Entry): boolean =>
      (e.type === R_AARCH64_JUMP26 || e.type === R_AARCH64_CALL26) &&
      !(e.sym < elf.symbols.length && elf.symbols[e.sym].shndx === rela.info);
    // partition_branch_plt_relas(), exactly (including the last slot it leaves unsorted).
    let i = 0;
    let j = n - 1;
    while (i < j) {
      if (needsPlt(entries[i])) i++;
      else if (needsPlt(entries[j])) [entries[i], entries[j]] = [entries[j], entries[i]];
      else j--;
    }
    const nents = n > 0 ? i : 0;
    if (nents > 0) {
      const head = entries.slice(0, nents).sort(cmpRela);
      for (let k = 0; k < nents; k++) entries[k] = head[k];
    }
    order.set(
      rela.index,
      Uint32Array.from(entries, (e) => e.i),
    );
    // count_plts()
    let count = 0;
    for (let k = 0; k < n; k++) {
      const e = entries[k];
      if (!needsPlt(e)) continue;
      if (e.addend !== 0 || !(k > 0 && cmpRela(e, entries[k - 1]) === 0)) count++;
    }
    if (dst.name.startsWith('.init')) initPlts += count;
    else corePlts += count;
  }
  const sections = elf.sections.map((s) => {
    if (s.index === coreIndex || s.index === initIndex) {
      const plts = s.index === coreIndex ? corePlts : initPlts;
      return {
        ...s,
        type: SHT_NOBITS,
        flags: SHF_EXECINSTR | SHF_ALLOC,
        alignBytes: PLT_ALIGN_BYTES,
        sizeBytes: (plts + 1) * PLT_ENTRY_BYTES,
      };
    }
    if (s.index === tramp) {
      return {
        ...s,
        type: SHT_NOBITS,
        flags: SHF_EXECINSTR | SHF_ALLOC,
        alignBytes: 4,
        sizeBytes: NR_FTRACE_PLTS * PLT_ENTRY_BYTES,
      };
    }
    return s;
  });
  return {
    elf: { ...elf, sections },
    plts: { coreIndex, initIndex, coreMaxEntries: corePlts, initMaxEntries: initPlts, order },
  };
}

/** AARCH64_BREAK_FAULT: what aarch64_insn_gen_adr() returns for an offset beyond +-4 GiB. */
const AARCH64_BREAK_FAULT = 0xd4202000;

/**
 * get_plt_entry(dst, pc): ADRP x16, dst; ADD x16, x16, #dst % 4K; BR x16. Beyond ADRP reach
 * (+-4 GiB) aarch64_insn_gen_adr() logs and returns AARCH64_BREAK_FAULT, which Linux writes as
 * the entry's first word: the module loads and traps when it takes that branch.
 */
export function pltEntryWords(dst: number, pc: number): [number, number, number] {
  const pages = Math.floor(dst / 4096) - Math.floor(pc / 4096);
  const offset = pages * 4096;
  const lo12 = ((dst % 4096) + 4096) % 4096;
  const add = (0x91000210 | (lo12 << 10)) >>> 0;
  if (offset < -(2 ** 32) || offset >= 2 ** 32) return [AARCH64_BREAK_FAULT, add, 0xd61f0200];
  const imm = ((pages % 2 ** 21) + 2 ** 21) % 2 ** 21;
  const adrp = (0x90000010 | ((imm & 3) << 29) | (((imm >>> 2) & 0x7ffff) << 5)) >>> 0;
  return [adrp, add, 0xd61f0200];
}

/** One PLT section being filled (struct mod_plt_sec), with its memory image. */
export class PltSection {
  numEntries = 0;
  private lastTarget = Number.NaN;
  constructor(
    /** Run-time address of the section (signed). */
    readonly addr: number,
    readonly maxEntries: number,
    private readonly view: DataView,
    /** Offset of the section inside the image. */
    private readonly imageOffset: number,
  ) {}

  /** module_emit_plt_entry(): the entry's address, or 0 when the room counted is used up. */
  emit(val: number): number {
    const i = this.numEntries;
    // Linux writes plt[i] first, then finds it a duplicate of plt[i - 1] (the slot stays
    // written but unused); the section has room for one entry more than counted.
    if (i <= this.maxEntries) {
      const words = pltEntryWords(val, this.addr + i * PLT_ENTRY_BYTES);
      for (let w = 0; w < 3; w++)
        this.view.setUint32(this.imageOffset + i * PLT_ENTRY_BYTES + w * 4, words[w], true);
    }
    if (i > 0 && this.lastTarget === val) return this.addr + (i - 1) * PLT_ENTRY_BYTES;
    this.numEntries++;
    if (this.numEntries > this.maxEntries) return 0;
    this.lastTarget = val;
    return this.addr + i * PLT_ENTRY_BYTES;
  }
}
