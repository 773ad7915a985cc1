/**
 * Pieces of do_jit() (arch/x86/net/bpf_jit_comp.c, Linux 6.1.192) kept apart from the pass loop
 * in jit-x86.ts so each file stays readable: detect_reg_usage() and the callee-saved pushes and
 * pops, emit_prologue(), the x86 condition codes and ALU opcode tables, the compare before a
 * conditional jump, and emit_atomic() with the cmpxchg loop for fetch-and/or/xor.
 */
import { BpfError } from './errors.js';
import {
  BPF_ADD,
  BPF_AND,
  BPF_ARSH,
  BPF_CMPXCHG,
  BPF_DW,
  BPF_FETCH,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JLE,
  BPF_JLT,
  BPF_JMP,
  BPF_JNE,
  BPF_JSET,
  BPF_JSGE,
  BPF_JSGT,
  BPF_JSLE,
  BPF_JSLT,
  BPF_LSH,
  BPF_OR,
  BPF_REG_0,
  BPF_REG_6,
  BPF_REG_7,
  BPF_REG_8,
  BPF_REG_9,
  BPF_REG_AX,
  BPF_RSH,
  BPF_SUB,
  BPF_X,
  BPF_XCHG,
  BPF_XOR,
  bpfClass,
  bpfOp,
  bpfSize,
  bpfSrc,
  type EbpfInsn,
} from './insn.js';
import type { JitConfig, JitProgram } from './jit-x86.js';
import { AUX_REG, add1reg, add2reg, type Emit, isImm8 } from './x86-emit.js';

/** detect_reg_usage(): which callee-saved registers (rbx, r13, r14, r15) the program touches. */
export function calleeRegsUsed(insns: readonly EbpfInsn[]): boolean[] {
  const used = [false, false, false, false];
  for (const x of insns) {
    if (bpfClass(x.code) === BPF_JMP && bpfOp(x.code) === 0xf0) {
      throw new BpfError('EOPCODE', 'tail calls are not modelled');
    }
    [BPF_REG_6, BPF_REG_7, BPF_REG_8, BPF_REG_9].forEach((r, k) => {
      if (x.dst === r || x.src === r) used[k] = true;
    });
  }
  return used;
}

export function pushCalleeRegs(e: Emit, used: boolean[]): void {
  if (used[0]) e.b(0x53); // push rbx
  if (used[1]) e.b(0x41, 0x55); // push r13
  if (used[2]) e.b(0x41, 0x56); // push r14
  if (used[3]) e.b(0x41, 0x57); // push r15
}

export function popCalleeRegs(e: Emit, used: boolean[]): void {
  if (used[3]) e.b(0x41, 0x5f); // pop r15
  if (used[2]) e.b(0x41, 0x5e); // pop r14
  if (used[1]) e.b(0x41, 0x5d); // pop r13
  if (used[0]) e.b(0x5b); // pop rbx
}

export const ENDBR64 = [0xf3, 0x0f, 0x1e, 0xfa];

/** emit_prologue() (no tail calls). */
export function emitPrologue(e: Emit, p: JitProgram, c: JitConfig): void {
  if (c.ibt) e.b(...ENDBR64);
  e.nops(5); // x86_nops[5]: "BPF trampoline can be made to work without these nops"
  if (!p.wasClassic) e.b(0x66, 0x90); // nop2 (xor eax, eax only when tail calls are reachable)
  e.b(0x55); // push rbp
  e.b(0x48, 0x89, 0xe5); // mov rbp, rsp
  if (c.ibt) e.b(...ENDBR64); // X86_TAIL_CALL_OFFSET is here
  if (p.stackDepthBytes) {
    e.b(0x48, 0x81, 0xec); // sub rsp, rounded_stack_depth
    e.u32(Math.ceil(p.stackDepthBytes / 8) * 8);
  }
}

export const X86_JB = 0x72;
export const X86_JAE = 0x73;
export const X86_JE = 0x74;
export const X86_JNE = 0x75;
export const X86_JBE = 0x76;
export const X86_JA = 0x77;
export const X86_JL = 0x7c;
export const X86_JGE = 0x7d;
export const X86_JLE = 0x7e;
export const X86_JG = 0x7f;

export const JMP_COND: Readonly<Record<number, number>> = {
  [BPF_JEQ]: X86_JE,
  [BPF_JSET]: X86_JNE,
  [BPF_JNE]: X86_JNE,
  [BPF_JGT]: X86_JA,
  [BPF_JLT]: X86_JB,
  [BPF_JGE]: X86_JAE,
  [BPF_JLE]: X86_JBE,
  [BPF_JSGT]: X86_JG,
  [BPF_JSLT]: X86_JL,
  [BPF_JSGE]: X86_JGE,
  [BPF_JSLE]: X86_JLE,
};

/** simple_alu_opcodes[] */
export const SIMPLE_ALU: Readonly<Record<number, number>> = {
  [BPF_ADD]: 0x01,
  [BPF_SUB]: 0x29,
  [BPF_AND]: 0x21,
  [BPF_OR]: 0x09,
  [BPF_XOR]: 0x31,
  [BPF_LSH]: 0xe0,
  [BPF_RSH]: 0xe8,
  [BPF_ARSH]: 0xf8,
};

/** ALU K forms: [b3 'normal' ModRM base, b2 short form for eax/rax]. */
export const ALU_K: Readonly<Record<number, readonly [number, number]>> = {
  [BPF_ADD]: [0xc0, 0x05],
  [BPF_SUB]: [0xe8, 0x2d],
  [BPF_AND]: [0xe0, 0x25],
  [BPF_OR]: [0xc8, 0x0d],
  [BPF_XOR]: [0xf0, 0x35],
};

/** The compare (cmp/test) before a conditional jump. */
export function emitCmp(e: Emit, insn: EbpfInsn, is64: boolean): void {
  const { dst, src } = insn;
  const imm32 = insn.imm | 0;
  const op = bpfOp(insn.code);
  if (bpfSrc(insn.code) === BPF_X) {
    e.maybeMod(dst, src, is64);
    e.b(op === BPF_JSET ? 0x85 : 0x39, add2reg(0xc0, dst, src)); // test / cmp dst, src
    return;
  }
  if (op === BPF_JSET) {
    e.maybe1mod(dst, is64); // test dst, imm32
    e.b(0xf7, add1reg(0xc0, dst));
    e.u32(imm32);
    return;
  }
  if (imm32 === 0) {
    e.maybeMod(dst, dst, is64); // test dst, dst: one byte less
    e.b(0x85, add2reg(0xc0, dst, dst));
    return;
  }
  e.maybe1mod(dst, is64); // cmp dst, imm8/32
  if (isImm8(imm32)) e.b(0x83, add1reg(0xf8, dst), imm32);
  else {
    e.b(0x81, add1reg(0xf8, dst));
    e.u32(imm32);
  }
}

/** BPF_STX | BPF_ATOMIC: emit_atomic(), or the cmpxchg loop for fetch-and/or/xor. */
export function emitAtomicInsn(e: Emit, insn: EbpfInsn, index: number): void {
  const size = bpfSize(insn.code);
  const is64 = size === BPF_DW;
  const op = insn.imm;
  if (op === (BPF_AND | BPF_FETCH) || op === (BPF_OR | BPF_FETCH) || op === (BPF_XOR | BPF_FETCH)) {
    const realSrc = insn.src === BPF_REG_0 ? BPF_REG_AX : insn.src;
    const realDst = insn.dst === BPF_REG_0 ? BPF_REG_AX : insn.dst;
    e.movReg(true, BPF_REG_AX, BPF_REG_0);
    const branchTarget = e.length;
    e.ldx(size, BPF_REG_0, realDst, insn.off);
    e.movReg(is64, AUX_REG, BPF_REG_0);
    e.maybeMod(AUX_REG, realSrc, is64);
    e.b(SIMPLE_ALU[bpfOp(op)], add2reg(0xc0, AUX_REG, realSrc));
    emitAtomic(e, BPF_CMPXCHG, realDst, AUX_REG, insn.off, is64, index);
    e.b(X86_JNE, -(e.length - branchTarget) - 2);
    e.movReg(is64, realSrc, BPF_REG_0);
    e.movReg(true, BPF_REG_0, BPF_REG_AX);
    return;
  }
  emitAtomic(e, op, insn.dst, insn.src, insn.off, is64, index);
}

/** emit_atomic() */
export function emitAtomic(
  e: Emit,
  op: number,
  dst: number,
  src: number,
  off: number,
  is64: boolean,
  index: number,
): void {
  e.b(0xf0); // lock prefix
  e.maybeMod(dst, src, is64);
  switch (op) {
    case BPF_ADD:
    case BPF_AND:
    case BPF_OR:
    case BPF_XOR:
      e.b(SIMPLE_ALU[op]);
      break;
    case BPF_ADD | BPF_FETCH:
      e.b(0x0f, 0xc1);
      break;
    case BPF_XCHG:
      e.b(0x87);
      break;
    case BPF_CMPXCHG:
      e.b(0x0f, 0xb1);
      break;
    default:
      throw new BpfError('EOPCODE', `unknown atomic opcode 0x${op.toString(16)}`, index);
  }
  e.suffix(dst, src, off);
}
