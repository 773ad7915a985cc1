/**
 * AArch64 RELA relocations, as Linux 6.1's arch/arm64/kernel/module.c apply_relocate_add()
 * applies them, with module PLTs for branches out of reach (plt-arm64.ts).
 *
 * Why exactly these rules: the arm64 module range exists because of them (a CALL26/JUMP26
 * reaches +-128 MiB, an ADRP +-4 GiB), so placement must fail, or cost a PLT entry, exactly where
 * Linux's would. Per type, with S + A = val and P the place (do_reloc(): ABS val, PREL val - P,
 * PAGE (val & ~0xfff) - (P & ~0xfff)):
 *   ABS64 / PREL64                 8 bytes, no check (reloc_data len 64);
 *   ABS32 / ABS16                  value in [0, U32_MAX] / [0, U16_MAX], else -ERANGE;
 *   PREL32 / PREL16                value in [S32_MIN, S32_MAX] / [S16_MIN, S16_MAX];
 *   MOVW_UABS_G0..G3 (+_NC), MOVW_SABS_G0..G2, MOVW_PREL_G0..G3 (+_NC): reloc_insn_movw(),
 *     the SABS and checked PREL forms switch MOVZ/MOVN by sign; _NC and G3 are not checked;
 *   LD_PREL_LO19, CONDBR19 (19 bits of val >> 2), TSTBR14 (14 bits), ADR_PREL_LO21 (21 bits),
 *   ADR_PREL_PG_HI21(_NC) (PAGE, 21 bits of >> 12; _NC unchecked), ADD_ABS_LO12_NC and
 *   LDST8/16/32/64/128_ABS_LO12_NC (12 bits of val >> 0..4, unchecked): reloc_insn_imm(),
 *     which keeps the low `len` bits and calls the rest an overflow unless it is all sign;
 *   JUMP26 / CALL26 (26 bits of val >> 2): on -ERANGE, with CONFIG_ARM64_MODULE_PLTS (Debian:
 *     y), module_emit_plt_entry() and the branch goes to the PLT entry instead;
 *   anything else (R_AARCH64_NONE included: 6.1 has no case for it): "module %s: unsupported
 *     RELA relocation: %llu", -ENOEXEC. An overflow: "module %s: overflow in relocation type %d
 *     val %Lx", -ENOEXEC.
 * Unlike x86, arm64 does not require the target bytes to be zero: instruction relocations
 * rewrite fields of the instruction that is there.
 *
 * Not modelled: the Cortex-A53 erratum 843419 workaround (reloc_insn_adrp() turning an ADRP at
 * a page offset of 0xff8/0xffc into an ADR or a veneer). It runs only on CPUs with
 * ARM64_WORKAROUND_843419; the modelled CPU is one without it (as Neoverse server cores are).
 *
 * Arithmetic: the hot types use exact double arithmetic on signed 64-bit values (elf.ts); the
 * MOVW family, which no Debian module uses, uses BigInt.
 */
import { ElfError, type ElfFile, type ElfSection, RELA_BYTES, s64 } from './elf.js';
import type { ParseStats } from './names.js';
import { hexU64, RelocError, type RelocTarget, relocTypeName } from './reloc.js';

export const R_AARCH64_ABS64 = 257;
export const R_AARCH64_ABS32 = 258;
export const R_AARCH64_ABS16 = 259;
export const R_AARCH64_PREL64 = 260;
export const R_AARCH64_PREL32 = 261;
export const R_AARCH64_PREL16 = 262;
export const R_AARCH64_LD_PREL_LO19 = 273;
export const R_AARCH64_ADR_PREL_LO21 = 274;
export const R_AARCH64_ADR_PREL_PG_HI21 = 275;
export const R_AARCH64_ADR_PREL_PG_HI21_NC = 276;
export const R_AARCH64_ADD_ABS_LO12_NC = 277;
export const R_AARCH64_LDST8_ABS_LO12_NC = 278;
export const R_AARCH64_TSTBR14 = 279;
export const R_AARCH64_CONDBR19 = 280;
export const R_AARCH64_JUMP26 = 282;
export const R_AARCH64_CALL26 = 283;
export const R_AARCH64_LDST16_ABS_LO12_NC = 284;
export const R_AARCH64_LDST32_ABS_LO12_NC = 285;
export const R_AARCH64_LDST64_ABS_LO12_NC = 286;
export const R_AARCH64_LDST128_ABS_LO12_NC = 299;

/** The MOVW family: type -> [name, op, lsb, signed (MOVZ/MOVN switch), checked]. */
const MOVW: Readonly<Record<number, readonly [string, 'abs' | 'prel', number, boolean, boolean]>> = {
  263: ['MOVW_UABS_G0', 'abs', 0, false, true],
  264: ['MOVW_UABS_G0_NC', 'abs', 0, false, false],
  265: ['MOVW_UABS_G1', 'abs', 16, false, true],
  266: ['MOVW_UABS_G1_NC', 'abs', 16, false, false],
  267: ['MOVW_UABS_G2', 'abs', 32, false, true],
  268: ['MOVW_UABS_G2_NC', 'abs', 32, false, false],
  269: ['MOVW_UABS_G3', 'abs', 48, false, false],
  270: ['MOVW_SABS_G0', 'abs', 0, true, true],
  271: ['MOVW_SABS_G1', 'abs', 16, true, true],
  272: ['MOVW_SABS_G2', 'abs', 32, true, true],
  287: ['MOVW_PREL_G0', 'prel', 0, true, true],
  288: ['MOVW_PREL_G0_NC', 'prel', 0, false, false],
  289: ['MOVW_PREL_G1', 'prel', 16, true, true],
  290: ['MOVW_PREL_G1_NC', 'prel', 16, false, false],
  291: ['MOVW_PREL_G2', 'prel', 32, true, true],
  292: ['MOVW_PREL_G2_NC', 'prel', 32, false, false],
  293: ['MOVW_PREL_G3', 'prel', 48, true, false],
};

const NAMES: Record<number, string> = {
  257: 'ABS64',
  258: 'ABS32',
  259: 'ABS16',
  260: 'PREL64',
  261: 'PREL32',
  262: 'PREL16',
  273: 'LD_PREL_LO19',
  274: 'ADR_PREL_LO21',
  275: 'ADR_PREL_PG_HI21',
  276: 'ADR_PREL_PG_HI21_NC',
  277: 'ADD_ABS_LO12_NC',
  278: 'LDST8_ABS_LO12_NC',
  279: 'TSTBR14',
  280: 'CONDBR19',
  282: 'JUMP26',
  283: 'CALL26',
  284: 'LDST16_ABS_LO12_NC',
  285: 'LDST32_ABS_LO12_NC',
  286: 'LDST64_ABS_LO12_NC',
  299: 'LDST128_ABS_LO12_NC',
};
for (const [t, m] of Object.entries(MOVW)) NAMES[Number(t)] = m[0];

/** Every type apply_relocate_add() (6.1) has a case for. */
export const SUPPORTED_AARCH64_RELOC_TYPES: readonly number[] = Object.keys(NAMES)
  .map(Number)
  .sort((a, b) => a - b);

export function aarch64RelocName(type: number): string {
  const n = NAMES[type];
  return n ? `R_AARCH64_${n}` : `type ${type}`;
}

const TWO32 = 4294967296;

/** Where a CALL26/JUMP26 out of reach goes instead: module_emit_plt_entry(); 0 = no room. */
export type EmitPlt = (loc: number, val: number, init: boolean) => number;

export interface Arm64RelocOptions {
  readonly moduleName: string;
  /** Is the target section in init memory (within_module_init(loc)): selects the init PLT. */
  readonly initTarget: boolean;
  /** Entry indices in the order apply_relocate_add() sees them (frob sorted them); default 0..n-1. */
  readonly order?: Uint32Array;
  readonly emitPlt: EmitPlt;
}

/** Instruction immediate fields (aarch64_insn_encode_immediate()): [shift, mask]. */
const IMM26: readonly [number, number] = [0, 0x3ffffff];
const IMM19: readonly [number, number] = [5, 0x7ffff];
const IMM14: readonly [number, number] = [5, 0x3fff];
const IMM12: readonly [number, number] = [10, 0xfff];

function encodeImm(insn: number, field: readonly [number, number], imm: number): number {
  return ((insn & ~(field[1] * 2 ** field[0])) | ((imm & field[1]) * 2 ** field[0])) >>> 0;
}

/** ADR/ADRP immediate: immlo (2 bits) at 29, immhi (19 bits) at 5. */
function encodeAdr(insn: number, imm: number): number {
  const cleared = insn & ~((3 << 29) | (0x7ffff << 5));
  return (cleared | ((imm & 3) << 29) | (((imm >>> 2) & 0x7ffff) << 5)) >>> 0;
}

/**
 * reloc_insn_imm(): write the low `len` bits of (do_reloc value >> lsb) into the instruction;
 * true when the rest is not all sign bits (-ERANGE).
 */
function insnImm(
  view: DataView,
  at: number,
  sval: number,
  lsb: number,
  len: number,
  field: 'adr' | readonly [number, number],
): boolean {
  const shifted = Math.floor(sval / 2 ** lsb);
  const span = 2 ** len;
  const imm = ((shifted % span) + span) % span;
  const insn = view.getUint32(at, true);
  view.setUint32(at, field === 'adr' ? encodeAdr(insn, imm) : encodeImm(insn, field, imm), true);
  return shifted < -(span / 2) || shifted >= span / 2;
}

function writeU64(view: DataView, at: number, val: number): void {
  const hi = Math.floor(val / TWO32);
  view.setUint32(at, val - hi * TWO32, true);
  view.setInt32(at + 4, hi | 0, true);
}

/** reloc_insn_movw() in BigInt: true on -ERANGE. */
function insnMovw(view: DataView, at: number, sval: number, lsb: number, signed: boolean): boolean {
  const s = BigInt(sval);
  let imm = BigInt.asUintN(64, s >> BigInt(lsb));
  let insn = view.getUint32(at, true);
  if (signed) {
    insn = (insn & ~(3 << 29)) >>> 0;
    if (s >= 0n) insn = (insn | (2 << 29)) >>> 0;
    else imm = BigInt.asUintN(64, ~imm);
  }
  const field = Number(imm & 0xffffn);
  view.setUint32(at, ((insn & ~(0xffff << 5)) | (field << 5)) >>> 0, true);
  return imm > 0xffffn;
}

function pageOf(v: number): number {
  return Math.floor(v / 4096) * 4096;
}

/**
 * Apply one RELA section to its laid-out target (apply_relocate_add()). Throws RelocError or
 * ElfError naming the section, the entry's offset and type; the caller discards the images.
 */
export function applyRelaSectionArm64(
  elf: ElfFile,
  rela: ElfSection,
  target: RelocTarget,
  targetName: string,
  symValues: Float64Array,
  counts: Uint32Array,
  opts: Arm64RelocOptions,
  stats?: ParseStats,
): void {
  const n = rela.sizeBytes / RELA_BYTES;
  const view = elf.view;
  const out = target.view;
  if (stats) stats.relocEntries += n;
  for (let k = 0; k < n; k++) {
    const i = opts.order ? opts.order[k] : k;
    const e = rela.offset + i * RELA_BYTES;
    const offLo = view.getUint32(e, true);
    const offHi = view.getUint32(e + 4, true);
    const type = view.getUint32(e + 8, true);
    const symIdx = view.getUint32(e + 12, true);
    const where = `${targetName}+0x${offLo.toString(16)} (${rela.name}[${i}], ${aarch64RelocName(type)})`;
    if (symIdx >= symValues.length)
      throw new ElfError(
        'ERELA',
        `${rela.name}[${i}]: symbol index ${symIdx} >= ${symValues.length} symbols`,
      );
    if (NAMES[type] === undefined)
      throw new RelocError(
        'unknown-type',
        type,
        `module ${opts.moduleName}: unsupported RELA relocation: ${type} at ${where}`,
      );
    const size =
      type === R_AARCH64_ABS64 || type === R_AARCH64_PREL64
        ? 8
        : type === R_AARCH64_ABS16 || type === R_AARCH64_PREL16
          ? 2
          : 4;
    if (offHi !== 0 || offLo + size > target.sectionBytes)
      throw new ElfError('ERELA', `${where}: offset outside its ${target.sectionBytes}-byte section`);
    const val = symValues[symIdx] + s64(view, e + 16);
    if (Number.isNaN(val))
      throw new RelocError('unrepresentable', type, `${where}: symbol or addend value is not representable`);
    const loc = target.sectionAddr + offLo;
    const at = target.imageOffset + offLo;
    let ovf = false;
    switch (type) {
      case R_AARCH64_ABS64:
        writeU64(out, at, val);
        break;
      case R_AARCH64_PREL64:
        writeU64(out, at, val - loc);
        break;
      case R_AARCH64_ABS32:
        out.setUint32(at, ((val % TWO32) + TWO32) % TWO32, true);
        ovf = val < 0 || val >= TWO32;
        break;
      case R_AARCH64_PREL32: {
        const d = val - loc;
        out.setUint32(at, ((d % TWO32) + TWO32) % TWO32, true);
        ovf = d < -(2 ** 31) || d >= 2 ** 31;
        break;
      }
      case R_AARCH64_ABS16:
        out.setUint16(at, ((val % 65536) + 65536) % 65536, true);
        ovf = val < 0 || val > 0xffff;
        break;
      case R_AARCH64_PREL16: {
        const d = val - loc;
        out.setUint16(at, ((d % 65536) + 65536) % 65536, true);
        ovf = d < -32768 || d > 32767;
        break;
      }
      case R_AARCH64_LD_PREL_LO19:
      case R_AARCH64_CONDBR19:
        ovf = insnImm(out, at, val - loc, 2, 19, IMM19);
        break;
      case R_AARCH64_TSTBR14:
        ovf = insnImm(out, at, val - loc, 2, 14, IMM14);
        break;
      case R_AARCH64_ADR_PREL_LO21:
        ovf = insnImm(out, at, val - loc, 0, 21, 'adr');
        break;
      case R_AARCH64_ADR_PREL_PG_HI21:
        ovf = insnImm(out, at, pageOf(val) - pageOf(loc), 12, 21, 'adr');
        break;
      case R_AARCH64_ADR_PREL_PG_HI21_NC:
        insnImm(out, at, pageOf(val) - pageOf(loc), 12, 21, 'adr');
        break;
      case R_AARCH64_ADD_ABS_LO12_NC:
      case R_AARCH64_LDST8_ABS_LO12_NC:
        insnImm(out, at, val, 0, 12, IMM12);
        break;
      case R_AARCH64_LDST16_ABS_LO12_NC:
        insnImm(out, at, val, 1, 11, IMM12);
        break;
      case R_AARCH64_LDST32_ABS_LO12_NC:
        insnImm(out, at, val, 2, 10, IMM12);
        break;
      case R_AARCH64_LDST64_ABS_LO12_NC:
        insnImm(out, at, val, 3, 9, IMM12);
        break;
      case R_AARCH64_LDST128_ABS_LO12_NC:
        insnImm(out, at, val, 4, 8, IMM12);
        break;
      case R_AARCH64_JUMP26:
      case R_AARCH64_CALL26:
        ovf = insnImm(out, at, val - loc, 2, 26, IMM26);
        if (ovf) {
          const plt = opts.emitPlt(loc, val, opts.initTarget);
          if (plt === 0)
            throw new RelocError(
              'plt-full',
              type,
              `module ${opts.moduleName}: no PLT entry left for ${where}`,
            );
          ovf = insnImm(out, at, plt - loc, 2, 26, IMM26);
        }
        break;
      default: {
        const [, op, lsb, signed, checked] = MOVW[type];
        const r = insnMovw(out, at, op === 'prel' ? val - loc : val, lsb, signed);
        ovf = checked && r;
      }
    }
    if (ovf)
      throw new RelocError(
        'overflow',
        type,
        `module ${opts.moduleName}: overflow in relocation type ${type} val ${hexU64(val)} at ${where}`,
      );
    counts[type]++;
  }
}

/** A relocation type's name on either architecture (x86-64 types are below 64, AArch64's from 257). */
export function anyRelocTypeName(type: number): string {
  return type >= 256 ? aarch64RelocName(type) : relocTypeName(type);
}

/**
 * Check every entry of a RELA section before anything is allocated: symbol index, type one
 * Linux applies, place inside the section, S + A representable (see reloc.ts checkRelaEntries).
 */
export function checkRelaEntriesArm64(
  elf: ElfFile,
  rela: ElfSection,
  targetSectionBytes: number,
  symValues: Float64Array,
  moduleName: string,
  stats?: ParseStats,
): void {
  const n = rela.sizeBytes / RELA_BYTES;
  const view = elf.view;
  for (let i = 0; i < n; i++) {
    const e = rela.offset + i * RELA_BYTES;
    const offLo = view.getUint32(e, true);
    const type = view.getUint32(e + 8, true);
    const symIdx = view.getUint32(e + 12, true);
    const where = `${rela.name}[${i}] at offset 0x${offLo.toString(16)}, ${aarch64RelocName(type)}`;
    if (symIdx >= symValues.length)
      throw new ElfError('ERELA', `${where}: symbol index ${symIdx} >= ${symValues.length} symbols`);
    if (NAMES[type] === undefined)
      throw new RelocError(
        'unknown-type',
        type,
        `module ${moduleName}: unsupported RELA relocation: ${type} (${where})`,
      );
    const size =
      type === R_AARCH64_ABS64 || type === R_AARCH64_PREL64
        ? 8
        : type === R_AARCH64_ABS16 || type === R_AARCH64_PREL16
          ? 2
          : 4;
    if (view.getUint32(e + 4, true) !== 0 || offLo + size > targetSectionBytes)
      throw new ElfError('ERELA', `${where}: place outside its ${targetSectionBytes}-byte section`);
    if (Number.isNaN(symValues[symIdx] + s64(view, e + 16)))
      throw new RelocError('unrepresentable', type, `${where}: symbol or addend value is not representable`);
  }
  if (stats) stats.relocEntries += n;
}
