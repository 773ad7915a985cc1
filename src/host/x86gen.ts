/**
 * A very small x86-64 code generator: enough to JIT real functions into host memory and check
 * their answers (tests, examples, benchmarks).
 *
 * Why our own and this small: the host backend is only proven by running code written through
 * update(); a handful of encodings (mov, add, sub, imul, xor, cmp, test, inc, a scaled load, short
 * jumps, ret) gives arithmetic functions and a loop over a buffer, which is what the tests need.
 * Encodings follow the Intel SDM vol. 2 opcode tables: ModRM = mod<<6 | reg<<3 | rm, SIB =
 * scale<<6 | index<<3 | base; 32-bit operations zero-extend into the 64-bit register, so results
 * are returned in eax for C `int`. System V AMD64 ABI: arguments in edi, esi, edx, ecx; result in
 * eax; eax, ecx, edx, esi, edi are caller-saved, so the functions here need no stack frame.
 * Only registers 0-7 (no REX prefix) are supported; that is asserted, not silently wrong.
 */
import { assert } from '../base/assert.js';

export const EAX = 0;
export const ECX = 1;
export const EDX = 2;
export const EBX = 3;
export const ESI = 6;
export const EDI = 7;
export type Reg = 0 | 1 | 2 | 3 | 6 | 7;

/** The trap opcode (int3) the backend fills free text with on x86-64. */
export const INT3 = 0xcc;

const CODE_MAX_BYTES = 1 << 20;

export interface Label {
  pos: number;
  readonly fixups: number[];
}

function checkReg(r: number): void {
  assert(Number.isInteger(r) && r >= 0 && r <= 7 && r !== 4 && r !== 5, `unsupported register ${r}`);
}

function checkImm32(v: number): void {
  assert(Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 32, `immediate ${v} does not fit 32 bits`);
}

export class X86Asm {
  private readonly buf: number[] = [];

  get sizeBytes(): number {
    return this.buf.length;
  }

  private byte(b: number): this {
    assert(this.buf.length < CODE_MAX_BYTES, 'code too large');
    this.buf.push(b & 0xff);
    return this;
  }

  private imm32(v: number): this {
    checkImm32(v);
    const u = v >>> 0;
    return this.byte(u)
      .byte(u >>> 8)
      .byte(u >>> 16)
      .byte(u >>> 24);
  }

  private modrmRR(op: number[], reg: number, rm: number): this {
    checkReg(reg);
    checkReg(rm);
    for (const b of op) this.byte(b);
    return this.byte(0xc0 | (reg << 3) | rm);
  }

  /** mov dst, imm32 (B8+rd id) */
  movImm(dst: Reg, imm: number): this {
    checkReg(dst);
    return this.byte(0xb8 + dst).imm32(imm);
  }

  /** mov dst, src (8B /r) */
  mov(dst: Reg, src: Reg): this {
    return this.modrmRR([0x8b], dst, src);
  }

  /** add dst, src (03 /r) */
  add(dst: Reg, src: Reg): this {
    return this.modrmRR([0x03], dst, src);
  }

  /** sub dst, src (2B /r) */
  sub(dst: Reg, src: Reg): this {
    return this.modrmRR([0x2b], dst, src);
  }

  /** imul dst, src (0F AF /r) */
  imul(dst: Reg, src: Reg): this {
    return this.modrmRR([0x0f, 0xaf], dst, src);
  }

  /** imul dst, src, imm32 (69 /r id) */
  imulImm(dst: Reg, src: Reg, imm: number): this {
    return this.modrmRR([0x69], dst, src).imm32(imm);
  }

  /** add dst, imm32 (81 /0 id; 05 id for eax) */
  addImm(dst: Reg, imm: number): this {
    checkReg(dst);
    if (dst === EAX) return this.byte(0x05).imm32(imm);
    return this.byte(0x81)
      .byte(0xc0 | dst)
      .imm32(imm);
  }

  /** sub dst, imm32 (81 /5 id) */
  subImm(dst: Reg, imm: number): this {
    checkReg(dst);
    return this.byte(0x81)
      .byte(0xc0 | (5 << 3) | dst)
      .imm32(imm);
  }

  /** xor dst, src (33 /r) */
  xor(dst: Reg, src: Reg): this {
    return this.modrmRR([0x33], dst, src);
  }

  /** cmp a, b (3B /r: flags of a - b) */
  cmp(a: Reg, b: Reg): this {
    return this.modrmRR([0x3b], a, b);
  }

  /** test a, b (85 /r) */
  test(a: Reg, b: Reg): this {
    return this.modrmRR([0x85], b, a);
  }

  /** inc r (FF /0) */
  inc(r: Reg): this {
    checkReg(r);
    return this.byte(0xff).byte(0xc0 | r);
  }

  /** add dst, dword [base + index*4] (03 /r with SIB, mod 00; base must not be ebp/r13) */
  addLoad4(dst: Reg, base: Reg, index: Reg): this {
    checkReg(dst);
    checkReg(base);
    checkReg(index);
    return this.byte(0x03)
      .byte((dst << 3) | 4)
      .byte((2 << 6) | (index << 3) | base);
  }

  ret(): this {
    return this.byte(0xc3);
  }

  nop(): this {
    return this.byte(0x90);
  }

  int3(): this {
    return this.byte(INT3);
  }

  label(): Label {
    return { pos: -1, fixups: [] };
  }

  bind(l: Label): this {
    assert(l.pos < 0, 'label bound twice');
    l.pos = this.buf.length;
    for (const at of l.fixups) this.patchRel8(at, l.pos);
    return this;
  }

  private jcc8(opcode: number, l: Label): this {
    this.byte(opcode).byte(0);
    const at = this.buf.length - 1;
    if (l.pos >= 0) this.patchRel8(at, l.pos);
    else l.fixups.push(at);
    return this;
  }

  private patchRel8(at: number, target: number): void {
    const rel = target - (at + 1);
    assert(rel >= -128 && rel <= 127, `short jump out of range (${rel})`);
    this.buf[at] = rel & 0xff;
  }

  /** jl rel8 (signed less) */
  jl(l: Label): this {
    return this.jcc8(0x7c, l);
  }

  /** jle rel8 (signed less or equal) */
  jle(l: Label): this {
    return this.jcc8(0x7e, l);
  }

  /** jmp rel8 */
  jmp(l: Label): this {
    return this.jcc8(0xeb, l);
  }

  /** Pad with nops up to `sizeBytes`. */
  padTo(sizeBytes: number): this {
    assert(sizeBytes >= this.buf.length, `code (${this.buf.length} B) already exceeds ${sizeBytes} B`);
    while (this.buf.length < sizeBytes) this.nop();
    return this;
  }

  bytes(): Uint8Array {
    return Uint8Array.from(this.buf);
  }
}

// ------------------------------------------------------------------ ready-made functions

/** int f(void) { return k; } */
export function genConst(k: number): Uint8Array {
  return new X86Asm().movImm(EAX, k).ret().bytes();
}

/** int f(int a, int b) { return a * mul + b + add; } (wrapping 32-bit arithmetic) */
export function genLinear(mul: number, add: number): Uint8Array {
  return new X86Asm().imulImm(EAX, EDI, mul).add(EAX, ESI).addImm(EAX, add).ret().bytes();
}

/** int f(int a, int b) { return (a - b) * (a + b); } */
export function genDiffTimesSum(): Uint8Array {
  return new X86Asm().mov(EAX, EDI).sub(EAX, ESI).mov(EDX, EDI).add(EDX, ESI).imul(EAX, EDX).ret().bytes();
}

/** int f(const int32_t *p, int n) { int s = 0; for (int i = 0; i < n; i++) s += p[i]; return s; } */
export function genSum(): Uint8Array {
  const a = new X86Asm();
  const done = a.label();
  const loop = a.label();
  a.xor(EAX, EAX).test(ESI, ESI).jle(done).xor(ECX, ECX);
  a.bind(loop).addLoad4(EAX, EDI, ECX).inc(ECX).cmp(ECX, ESI).jl(loop);
  a.bind(done).ret();
  return a.bytes();
}

/**
 * A function of exactly `sizeBytes` bytes (>= 6) returning `seed + sum of the addends`: a chain of
 * `add eax, imm32` (5 bytes each) and nops, so its answer proves every byte was written.
 * Returns the code and the expected result (as a signed 32-bit int).
 */
export function genSized(sizeBytes: number, seed: number): { code: Uint8Array; expected: number } {
  assert(Number.isInteger(sizeBytes) && sizeBytes >= 6, 'genSized needs at least 6 bytes');
  const a = new X86Asm().movImm(EAX, seed | 0);
  let expected = seed | 0;
  let k = 1;
  while (a.sizeBytes + 5 + 1 <= sizeBytes) {
    const addend = (seed * 31 + k * 7919) & 0xffff;
    a.addImm(EAX, addend);
    expected = (expected + addend) | 0;
    k++;
  }
  a.padTo(sizeBytes - 1).ret();
  return { code: a.bytes(), expected };
}
