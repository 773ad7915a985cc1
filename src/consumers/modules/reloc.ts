/**
 * x86-64 RELA relocations, as Linux's arch/x86/kernel/module.c __write_relocate_add() applies
 * them.
 *
 * Why exactly these rules: a module placed out of reach of the kernel image must fail the way
 * Linux fails, because that failure is the reason the module range exists next to the kernel
 * (DESIGN.md rule 7). Linux computes val = S + A and then, per type:
 *   R_X86_64_NONE  nothing;                R_X86_64_64   8 bytes, no check;
 *   R_X86_64_32    val must fit u32;       R_X86_64_32S  val must fit s32 (sign-extended);
 *   R_X86_64_PC32 / R_X86_64_PLT32  val -= P, 4 bytes;   R_X86_64_PC64  val -= P, 8 bytes;
 *   anything else: "Unknown rela relocation: %llu" (-ENOEXEC).
 * An overflow prints "overflow in relocation type %d val %Lx" and "`%s' likely not compiled
 * with -mcmodel=kernel". Before writing, Linux also requires the target bytes to be zero
 * ("x86/modules: Invalid relocation target, existing value is nonzero ...", added with
 * livepatch's clear_relocate_add()).
 *
 * One deliberate difference, on by default and switchable: Linux does NOT check PC32/PLT32 for
 * overflow (the check has been `#if 0` since 2.6 and is absent in the current function), so a
 * module out of rel32 reach would be silently mis-linked. We check it (`checkPc32`), with
 * Linux's message format, because silently truncating a displacement is the failure the brief
 * wants made visible.
 *
 * Arithmetic: addresses are signed 64-bit values in doubles (elf.ts), so S + A - P is exact and
 * the range checks are plain comparisons; no BigInt on this path.
 */
import { ElfError, type ElfFile, type ElfSection, RELA_BYTES, s64 } from './elf.js';
import type { ParseStats } from './names.js';

export const R_X86_64_NONE = 0;
export const R_X86_64_64 = 1;
export const R_X86_64_PC32 = 2;
export const R_X86_64_PLT32 = 4;
export const R_X86_64_32 = 10;
export const R_X86_64_32S = 11;
export const R_X86_64_PC64 = 24;

/** Types this loader applies (as Linux 6.1 does); every other type is refused. */
export const SUPPORTED_RELOC_TYPES = [
  R_X86_64_NONE,
  R_X86_64_64,
  R_X86_64_PC32,
  R_X86_64_PLT32,
  R_X86_64_32,
  R_X86_64_32S,
  R_X86_64_PC64,
] as const;
/** Counters are kept per type number below this bound. */
export const RELOC_TYPE_LIMIT = 320;

const NAMES: Record<number, string> = {
  0: 'R_X86_64_NONE',
  1: 'R_X86_64_64',
  2: 'R_X86_64_PC32',
  4: 'R_X86_64_PLT32',
  10: 'R_X86_64_32',
  11: 'R_X86_64_32S',
  24: 'R_X86_64_PC64',
};

export function relocTypeName(type: number): string {
  return NAMES[type] ?? `type ${type}`;
}

export type RelocErrorKind =
  | 'overflow'
  | 'unknown-type'
  | 'nonzero-target'
  | 'bad-entry'
  | 'unrepresentable'
  | 'plt-full';

export class RelocError extends Error {
  override name = 'RelocError';
  constructor(
    readonly kind: RelocErrorKind,
    readonly relocType: number,
    message: string,
  ) {
    super(`ENOEXEC: ${message}`);
  }
}

const TWO32 = 4294967296;
const S32_MIN = -2147483648;
const S32_END = 2147483648;

/** Unsigned 64-bit hex of a signed value, as printk's %Lx prints it. */
export function hexU64(v: number): string {
  return BigInt.asUintN(64, BigInt(v)).toString(16);
}

/** Where a relocation section's target lives once laid out. */
export interface RelocTarget {
  /** The memory image the target section was copied into. */
  readonly image: Uint8Array;
  readonly view: DataView;
  /** Offset of the section inside `image`. */
  readonly imageOffset: number;
  readonly sectionBytes: number;
  /** Runtime address of the section start (signed 64-bit). */
  readonly sectionAddr: number;
}

export interface RelocOptions {
  readonly moduleName: string;
  /** Check PC32/PLT32 for rel32 overflow (Linux does not; see header). Default true. */
  readonly checkPc32?: boolean;
  /** The target section's name, for messages (a failure names section, offset and type). */
  readonly targetName?: string;
}

/** " at SECTION+0xOFF (R_X86_64_...)": where a relocation failed. */
function placeOf(opts: RelocOptions, offset: number, type: number): string {
  return ` at ${opts.targetName ?? 'section'}+0x${offset.toString(16)} (${relocTypeName(type)})`;
}

/** Validate a RELA section header against the file (Linux apply_relocations() preconditions). */
export function checkRelaSection(elf: ElfFile, rela: ElfSection): void {
  if (rela.entsize !== RELA_BYTES)
    throw new ElfError('ERELA', `${rela.name}: entry size ${rela.entsize} != ${RELA_BYTES}`);
  if (rela.sizeBytes % RELA_BYTES !== 0)
    throw new ElfError('ERELA', `${rela.name}: size ${rela.sizeBytes} is not a multiple of ${RELA_BYTES}`);
  if (rela.link !== elf.symtabIndex)
    throw new ElfError(
      'ERELA',
      `${rela.name}: sh_link ${rela.link} is not the symbol table (${elf.symtabIndex})`,
    );
}

function overflow(type: number, val: number, opts: RelocOptions, offset: number): RelocError {
  return new RelocError(
    'overflow',
    type,
    `overflow in relocation type ${type} val ${hexU64(val)}; \`${opts.moduleName}' likely not compiled with -mcmodel=kernel${placeOf(opts, offset, type)}`,
  );
}

function isZero(image: Uint8Array, at: number, size: number): boolean {
  for (let i = 0; i < size; i++) if (image[at + i] !== 0) return false;
  return true;
}

function writeU64(view: DataView, at: number, val: number): void {
  const hi = Math.floor(val / TWO32);
  view.setUint32(at, val - hi * TWO32, true);
  view.setInt32(at + 4, hi | 0, true);
}

/** The fields of one RELA entry that both passes need. */
interface RelaEntry {
  readonly offset: number;
  readonly type: number;
  readonly symIdx: number;
  /** Bytes written: 8 for R_X86_64_64 / PC64, else 4 (0 for NONE). */
  readonly size: number;
  /** S + A with the symbol values given (NaN when not representable). */
  readonly val: number;
}

/**
 * Decode and check entry `i` of `rela` against its target section and the symbol table: symbol
 * index in range, type one Linux applies, target bytes inside the section, S + A representable.
 * Linux's __write_relocate_add() checks only the type ("Unknown rela relocation"); the other
 * checks guard the simulation (Linux would write wherever r_offset points).
 */
function decodeEntry(
  elf: ElfFile,
  rela: ElfSection,
  i: number,
  targetSectionBytes: number,
  symValues: Float64Array,
  opts: RelocOptions,
): RelaEntry {
  const view = elf.view;
  const e = rela.offset + i * RELA_BYTES;
  const offLo = view.getUint32(e, true);
  const offHi = view.getUint32(e + 4, true);
  const type = view.getUint32(e + 8, true);
  const symIdx = view.getUint32(e + 12, true);
  if (symIdx >= symValues.length) {
    throw new ElfError('ERELA', `${rela.name}[${i}]: symbol index ${symIdx} >= ${symValues.length} symbols`);
  }
  if (type === R_X86_64_NONE) return { offset: offLo, type, symIdx, size: 0, val: 0 };
  if (!(SUPPORTED_RELOC_TYPES as readonly number[]).includes(type))
    throw new RelocError(
      'unknown-type',
      type,
      `${opts.moduleName}: Unknown rela relocation: ${type} (${rela.name}[${i}] at offset 0x${offLo.toString(16)})`,
    );
  const size = type === R_X86_64_64 || type === R_X86_64_PC64 ? 8 : 4;
  if (offHi !== 0 || offLo + size > targetSectionBytes) {
    throw new ElfError(
      'ERELA',
      `${rela.name}[${i}]: offset 0x${offHi.toString(16)}${offLo.toString(16).padStart(8, '0')} + ${size} outside its ${targetSectionBytes}-byte section`,
    );
  }
  const val = symValues[symIdx] + s64(view, e + 16);
  if (Number.isNaN(val)) {
    throw new RelocError(
      'unrepresentable',
      type,
      `${rela.name}[${i}]: symbol or addend value is not representable`,
    );
  }
  return { offset: offLo, type, symIdx, size, val };
}

/**
 * Check every entry of a RELA section before anything is allocated: everything that does not
 * depend on where the module lands (see decodeEntry). `symValues` may hold provisional values
 * (sections based at 0): only whether a value is representable matters here, and that does not
 * depend on the base. Address-dependent failures (overflow, a target made nonzero by an earlier
 * entry) can only be seen by applyRelaSection.
 */
export function checkRelaEntries(
  elf: ElfFile,
  rela: ElfSection,
  targetSectionBytes: number,
  symValues: Float64Array,
  opts: RelocOptions,
  stats?: ParseStats,
): void {
  const n = rela.sizeBytes / RELA_BYTES;
  for (let i = 0; i < n; i++) decodeEntry(elf, rela, i, targetSectionBytes, symValues, opts);
  if (stats) stats.relocEntries += n;
}

/**
 * Apply one RELA section to its laid-out target. `symValues[i]` is symbol i's resolved runtime
 * value (signed 64-bit; NaN = unrepresentable). `counts[type]` is incremented per applied entry.
 * Throws RelocError or ElfError; the caller discards the images on failure.
 */
export function applyRelaSection(
  elf: ElfFile,
  rela: ElfSection,
  target: RelocTarget,
  symValues: Float64Array,
  counts: Uint32Array,
  opts: RelocOptions,
  stats?: ParseStats,
): void {
  const n = rela.sizeBytes / RELA_BYTES;
  const checkPc32 = opts.checkPc32 ?? true;
  if (stats) stats.relocEntries += n;
  for (let i = 0; i < n; i++) {
    const r = decodeEntry(elf, rela, i, target.sectionBytes, symValues, opts);
    const type = r.type;
    if (type === R_X86_64_NONE) {
      counts[type]++;
      continue;
    }
    let val = r.val;
    const loc = target.sectionAddr + r.offset;
    switch (type) {
      case R_X86_64_64:
        break;
      case R_X86_64_32:
        if (val < 0 || val >= TWO32) throw overflow(type, val, opts, r.offset);
        break;
      case R_X86_64_32S:
        if (val < S32_MIN || val >= S32_END) throw overflow(type, val, opts, r.offset);
        break;
      case R_X86_64_PC32:
      case R_X86_64_PLT32:
        val -= loc;
        if (checkPc32 && (val < S32_MIN || val >= S32_END)) throw overflow(type, val, opts, r.offset);
        break;
      case R_X86_64_PC64:
        val -= loc;
        break;
    }
    const at = target.imageOffset + r.offset;
    if (!isZero(target.image, at, r.size)) {
      throw new RelocError(
        'nonzero-target',
        type,
        `x86/modules: Invalid relocation target, existing value is nonzero for type ${type}, loc ${hexU64(loc)}, val ${hexU64(val)}${placeOf(opts, r.offset, type)}`,
      );
    }
    if (r.size === 8) writeU64(target.view, at, val);
    else target.view.setUint32(at, ((val % TWO32) + TWO32) % TWO32, true);
    counts[type]++;
  }
}
