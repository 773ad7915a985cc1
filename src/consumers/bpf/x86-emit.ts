/**
 * The x86-64 encoding helpers of the Linux BPF JIT (arch/x86/net/bpf_jit_comp.c, Linux 6.1.192):
 * register mapping, REX/ModRM construction and the small emitters do_jit() builds on.
 *
 * Why a line-for-line model and not an assembler: the image size Linux allocates is the sum of
 * the JIT's own encoding choices, which are not always the shortest encoding (a disp8 is emitted
 * even for offset 0; 'mov eax, imm32' for non-negative immediates but the 7-byte sign-extending
 * 'mov rax, imm32' for negative ones under ALU64; 'xor eax, eax' for zero; imm8 ALU forms only
 * for -128..127; the short 'op eax, imm32' only for BPF_REG_0). Each helper below is the C
 * function of the same name.
 */
import { BpfError } from './errors.js';
import { BPF_B, BPF_DW, BPF_H, BPF_REG_AX, BPF_W } from './insn.js';

/** include/linux/filter.h: MAX_BPF_JIT_REG = MAX_BPF_REG + 1; the JIT's two extra registers. */
export const AUX_REG = 13; // r11
export const X86_REG_R9 = 14; // r9

/** reg2hex[]: BPF register -> x86-64 register number (low 3 bits). */
const REG2HEX: readonly number[] = [
  0, // R0 -> rax
  7, // R1 -> rdi
  6, // R2 -> rsi
  2, // R3 -> rdx
  1, // R4 -> rcx
  0, // R5 -> r8
  3, // R6 -> rbx (callee saved)
  5, // R7 -> r13 (callee saved)
  6, // R8 -> r14 (callee saved)
  7, // R9 -> r15 (callee saved)
  5, // FP -> rbp
  2, // AX -> r10
  -1,
  3, // AUX_REG -> r11
  1, // X86_REG_R9 -> r9
];

/** is_ereg(): the BPF register maps to r8..r15 and needs a REX bit. */
export function isEreg(reg: number): boolean {
  return (
    reg === 5 ||
    reg === AUX_REG ||
    reg === 7 ||
    reg === 8 ||
    reg === 9 ||
    reg === X86_REG_R9 ||
    reg === BPF_REG_AX
  );
}

/** is_ereg_8l(): its low byte needs a REX prefix (dil, sil, bpl, r8b..r15b). */
export function isEreg8l(reg: number): boolean {
  return isEreg(reg) || reg === 1 || reg === 2 || reg === 10;
}

export function hex(reg: number): number {
  const h = REG2HEX[reg];
  if (h === undefined || h < 0) throw new BpfError('EOPCODE', `register r${reg} does not exist`);
  return h;
}

/** is_imm8() */
export const isImm8 = (v: number): boolean => v <= 127 && v >= -128;
/** is_imm8_jmp_offset(): 6.1.192's convergence fix limits forward short jumps to 123. */
export const isImm8JmpOffset = (v: number): boolean => v <= 123 && v >= -128;
/** is_simm32() */
export const isSimm32 = (v: number): boolean => v >= -(2 ** 31) && v <= 2 ** 31 - 1;

export const add1mod = (byte: number, reg: number): number => (isEreg(reg) ? byte | 1 : byte);
export const add2mod = (byte: number, r1: number, r2: number): number =>
  byte | (isEreg(r1) ? 1 : 0) | (isEreg(r2) ? 4 : 0);
export const add1reg = (byte: number, reg: number): number => (byte + hex(reg)) & 0xff;
export const add2reg = (byte: number, dst: number, src: number): number =>
  (byte + hex(dst) + (hex(src) << 3)) & 0xff;

/** x86_nops[] of a 64-bit kernel (arch/x86/include/asm/nops.h, BYTES_NOP1..8); ASM_NOP_MAX = 8. */
const X86_NOPS: readonly (readonly number[])[] = [
  [],
  [0x90],
  [0x66, 0x90],
  [0x0f, 0x1f, 0x00],
  [0x0f, 0x1f, 0x40, 0x00],
  [0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
  [0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];
export const ASM_NOP_MAX = 8;

/** The byte sink of one instruction (do_jit's `temp` buffer). */
export class Emit {
  readonly bytes: number[] = [];

  get length(): number {
    return this.bytes.length;
  }

  b(...bytes: number[]): void {
    for (const x of bytes) this.bytes.push(x & 0xff);
  }

  /** EMIT(x, 4): a little-endian 32-bit field. */
  u32(v: number): void {
    const x = v >>> 0;
    this.bytes.push(x & 0xff, (x >>> 8) & 0xff, (x >>> 16) & 0xff, (x >>> 24) & 0xff);
  }

  /** EMIT(x, len) for len 1, 2 or 4 (bpf_size_to_x86_bytes). */
  field(v: number, len: number): void {
    if (len === 1) this.b(v);
    else if (len === 2) this.b(v, v >>> 8);
    else this.u32(v);
  }

  /** emit_nops() */
  nops(len: number): void {
    let left = len;
    while (left > 0) {
      const n = Math.min(left, ASM_NOP_MAX);
      this.b(...X86_NOPS[n]);
      left -= n;
    }
  }

  /** EMIT_mov(DST, SRC): 64-bit register move, nothing when DST == SRC. */
  mov(dst: number, src: number): void {
    if (dst !== src) this.b(add2mod(0x48, dst, src), 0x89, add2reg(0xc0, dst, src));
  }

  /** emit_mov_imm32() */
  movImm32(signPropagate: boolean, dst: number, imm32: number): void {
    const imm = imm32 >>> 0;
    if (signPropagate && (imm | 0) < 0) {
      // 'mov %rax, imm32' sign extends imm32
      this.b(add1mod(0x48, dst), 0xc7, add1reg(0xc0, dst));
      this.u32(imm);
      return;
    }
    if (imm === 0) {
      // 'xor %eax, %eax' saves 3 bytes
      if (isEreg(dst)) this.b(add2mod(0x40, dst, dst));
      this.b(0x31, add2reg(0xc0, dst, dst));
      return;
    }
    // 'mov %eax, imm32' zero-extends
    if (isEreg(dst)) this.b(add1mod(0x40, dst));
    this.b(add1reg(0xb8, dst));
    this.u32(imm);
  }

  /** emit_mov_imm64() */
  movImm64(dst: number, hi: number, lo: number): void {
    if (hi >>> 0 === 0) {
      this.movImm32(false, dst, lo);
      return;
    }
    // movabsq %rax, imm64
    this.b(add1mod(0x48, dst), add1reg(0xb8, dst));
    this.u32(lo);
    this.u32(hi);
  }

  /** emit_mov_reg() */
  movReg(is64: boolean, dst: number, src: number): void {
    if (is64) {
      this.mov(dst, src);
      return;
    }
    if (isEreg(dst) || isEreg(src)) this.b(add2mod(0x40, dst, src));
    this.b(0x89, add2reg(0xc0, dst, src));
  }

  /** emit_insn_suffix(): ModRM with a disp8 when it fits (even for 0), else disp32. */
  suffix(ptr: number, val: number, off: number): void {
    if (isImm8(off)) {
      this.b(add2reg(0x40, ptr, val), off);
    } else {
      this.b(add2reg(0x80, ptr, val));
      this.u32(off);
    }
  }

  /** maybe_emit_mod() */
  maybeMod(dst: number, src: number, is64: boolean): void {
    if (is64) this.b(add2mod(0x48, dst, src));
    else if (isEreg(dst) || isEreg(src)) this.b(add2mod(0x40, dst, src));
  }

  /** maybe_emit_1mod() */
  maybe1mod(reg: number, is64: boolean): void {
    if (is64) this.b(add1mod(0x48, reg));
    else if (isEreg(reg)) this.b(add1mod(0x40, reg));
  }

  /** emit_ldx(): dst = *(size *)(src + off), zero-extended. */
  ldx(size: number, dst: number, src: number, off: number): void {
    switch (size) {
      case BPF_B:
        this.b(add2mod(0x48, src, dst), 0x0f, 0xb6);
        break;
      case BPF_H:
        this.b(add2mod(0x48, src, dst), 0x0f, 0xb7);
        break;
      case BPF_W:
        if (isEreg(dst) || isEreg(src)) this.b(add2mod(0x40, src, dst), 0x8b);
        else this.b(0x8b);
        break;
      case BPF_DW:
        this.b(add2mod(0x48, src, dst), 0x8b);
        break;
    }
    this.suffix(src, dst, off);
  }

  /** emit_stx(): *(size *)(dst + off) = src. */
  stx(size: number, dst: number, src: number, off: number): void {
    switch (size) {
      case BPF_B:
        if (isEreg(dst) || isEreg8l(src)) this.b(add2mod(0x40, dst, src), 0x88);
        else this.b(0x88);
        break;
      case BPF_H:
        if (isEreg(dst) || isEreg(src)) this.b(0x66, add2mod(0x40, dst, src), 0x89);
        else this.b(0x66, 0x89);
        break;
      case BPF_W:
        if (isEreg(dst) || isEreg(src)) this.b(add2mod(0x40, dst, src), 0x89);
        else this.b(0x89);
        break;
      case BPF_DW:
        this.b(add2mod(0x48, dst, src), 0x89);
        break;
    }
    this.suffix(dst, src, off);
  }

  /** emit_patch(): a rel32 call (0xE8) or jump (0xE9) from `ip` to `target`. */
  patch(opcode: number, target: number, ip: number): void {
    const offset = target - (ip + 5);
    if (!isSimm32(offset)) {
      throw new BpfError(
        'ERANGE',
        `call target 0x${target.toString(16)} is out of rel32 range of 0x${ip.toString(16)}`,
      );
    }
    this.b(opcode);
    this.u32(offset);
  }
}
