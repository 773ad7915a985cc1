/**
 * A module's ftrace call sites, read from its ELF file: the `__mcount_loc` section.
 *
 * Why from the file and the loader's layout: a module built with CONFIG_FTRACE_MCOUNT_RECORD
 * (Debian's 6.1: CONFIG_FTRACE_MCOUNT_USE_CC, gcc -mrecord-mcount) starts every traceable function
 * with a 5-byte `call __fentry__` and lists the address of each in `__mcount_loc`, an array of
 * 64-bit pointers that is only filled in by relocation (in the .ko every entry is 0 plus an
 * R_X86_64_64 RELA against the text section). Linux reads the relocated array from the loaded
 * module (mod->ftrace_callsites, kernel/module/main.c find_module_sections) in
 * ftrace_module_init() -> ftrace_process_locs() (kernel/trace/ftrace.c), which skips NULL entries
 * ("linkers will pad between the different mcount_loc sections ... Skip any NULL pointers") and
 * sorts the rest by address. Here the same pointers are computed from the RELA entries and the
 * loader's own layout (layout.ts, layout_sections()), so a site is known as (memory type, offset)
 * before the module is placed and becomes an address once it is.
 *
 * Only the parser API of the module loader is used (elf.ts, layout.ts); the loader itself is not
 * touched. Bounds: one record per 8 bytes of a section the parser already bounded by the file.
 */
import {
  type ElfFile,
  findSection,
  RELA_BYTES,
  SHN_LORESERVE,
  SHN_UNDEF,
  SHT_RELA,
  STT_FUNC,
  s64,
} from '../modules/elf.js';
import type { ModuleLayout } from '../modules/layout.js';
import { FtraceError } from './errors.js';
import { MCOUNT_INSN_BYTES } from './x86.js';

/** R_X86_64_64: the only relocation __mcount_loc entries carry on x86-64. */
const R_X86_64_64 = 1;

export interface McountSite {
  /** Core text (traceable while loaded) or init text (freed after init, ftrace_free_mem). */
  readonly memType: 'text' | 'init_text';
  /** Offset of the 5-byte call inside its memory type. */
  readonly offsetBytes: number;
  /** The STT_FUNC symbol containing the site, or null when none does. */
  readonly fn: string | null;
}

/** Function symbols of one section, sorted by value, for the site -> function look-up. */
interface FnIndex {
  readonly starts: number[];
  readonly ends: number[];
  readonly names: string[];
}

function functionIndex(elf: ElfFile, shndx: number, cache: Map<number, FnIndex>): FnIndex {
  const hit = cache.get(shndx);
  if (hit) return hit;
  const fns = elf.symbols
    .filter((s) => s.type === STT_FUNC && s.shndx === shndx && s.sizeBytes > 0 && Number.isFinite(s.value))
    .sort((a, b) => a.value - b.value);
  const idx = {
    starts: fns.map((s) => s.value),
    ends: fns.map((s) => s.value + s.sizeBytes),
    names: fns.map((s) => s.name),
  };
  cache.set(shndx, idx);
  return idx;
}

function functionAt(idx: FnIndex, off: number): string | null {
  let lo = 0;
  let hi = idx.starts.length - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (idx.starts[mid] <= off) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return best >= 0 && off < idx.ends[best] ? idx.names[best] : null;
}

/**
 * Every call site a module's `__mcount_loc` records, sorted by memory type then offset (as
 * ftrace_process_locs() sorts by address). Throws FtraceError ENOEXEC when the section cannot be
 * a real one (not a whole number of pointers, a relocation that is not R_X86_64_64 against a
 * defined symbol, a site outside executable text).
 */
export function readMcountSites(elf: ElfFile, layout: ModuleLayout): McountSite[] {
  const sec = findSection(elf, '__mcount_loc');
  if (sec === undefined || sec.sizeBytes === 0) return [];
  const fail = (m: string): never => {
    throw new FtraceError('ENOEXEC', `__mcount_loc: ${m}`);
  };
  if (sec.sizeBytes % 8 !== 0) fail(`${sec.sizeBytes} bytes is not a whole number of pointers`);
  const rela = elf.sections.filter((s) => s.type === SHT_RELA && s.info === sec.index);
  const seen = new Set<number>();
  const cache = new Map<number, FnIndex>();
  const out: McountSite[] = [];
  for (const r of rela) {
    if (r.sizeBytes % RELA_BYTES !== 0) fail(`${r.name} is not a whole number of entries`);
    for (let off = r.offset; off < r.offset + r.sizeBytes; off += RELA_BYTES) {
      const at = s64(elf.view, off);
      const type = elf.view.getUint32(off + 8, true);
      const symIndex = elf.view.getUint32(off + 12, true);
      const addend = s64(elf.view, off + 16);
      if (!(at >= 0 && at % 8 === 0 && at + 8 <= sec.sizeBytes)) fail(`entry offset ${at} is not a slot`);
      if (seen.has(at)) fail(`slot ${at} relocated twice`);
      seen.add(at);
      if (type !== R_X86_64_64) fail(`relocation type ${type} is not R_X86_64_64`);
      const sym = elf.symbols[symIndex];
      if (sym === undefined || sym.shndx === SHN_UNDEF || sym.shndx >= SHN_LORESERVE)
        fail(`slot ${at} points at symbol ${symIndex}, which is not defined in a section`);
      const secOff = sym.value + addend;
      const target = elf.sections[sym.shndx];
      const place = layout.placement[sym.shndx];
      if (!(Number.isSafeInteger(secOff) && secOff >= 0 && secOff + MCOUNT_INSN_BYTES <= target.sizeBytes))
        fail(`slot ${at} points outside ${target.name}`);
      if (!place || (place.memType !== 'text' && place.memType !== 'init_text'))
        return fail(`slot ${at} points into ${target.name}, which is not module text`);
      out.push({
        memType: place.memType,
        offsetBytes: place.offset + secOff,
        fn: functionAt(functionIndex(elf, sym.shndx, cache), secOff),
      });
    }
  }
  // Slots without a relocation stay NULL in the loaded module and are skipped, as Linux does.
  out.sort((a, b) =>
    a.memType === b.memType ? a.offsetBytes - b.offsetBytes : a.memType === 'text' ? -1 : 1,
  );
  for (let i = 1; i < out.length; i++) {
    const a = out[i - 1];
    const b = out[i];
    if (a.memType === b.memType && b.offsetBytes < a.offsetBytes + MCOUNT_INSN_BYTES)
      fail(`sites at ${a.offsetBytes} and ${b.offsetBytes} of ${a.memType} overlap`);
  }
  return out;
}
