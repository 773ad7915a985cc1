/**
 * The x86-64 BPF JIT: do_jit() and bpf_int_jit_compile()'s pass loop from
 * arch/x86/net/bpf_jit_comp.c (Linux 6.1.192, Debian's linux-source-6.1), so an image has the
 * size Linux would allocate for it.
 *
 * Why passes: x86 jumps have a 2-byte (rel8) and a 5/6-byte (rel32) form, and the choice depends
 * on the distance, which depends on every other choice. The kernel starts from a pessimistic
 * guess (64 bytes per instruction), re-emits the whole program until its length stops changing,
 * from pass 15 on pads shrinking jumps with NOPs so it must converge, and gives up after 20 passes
 * (falling back to the interpreter: no image). Only then does it call
 * bpf_jit_binary_pack_alloc() with the converged length, and emit once more at the final address
 * (calls are rel32, so their bytes depend on it; their size does not). jitX86 does the same and
 * returns the converged length; emitX86 is that last pass.
 *
 * Build facts (JitConfig), defaults from Debian's 6.1 cloud kernel config
 * (/boot/config-6.1.0-57-cloud-amd64): CONFIG_X86_KERNEL_IBT is not set (no ENDBR64 in the
 * prologue), CONFIG_SLS=y (ret is followed by int3, emit_return()). X86_FEATURE_RETHUNK is a
 * property of the CPU and mitigation choice (a 5-byte 'jmp __x86_return_thunk' instead of
 * ret+int3), and so is the classic-BPF BHB barrier (emit_spectre_bhb_barrier(), only for
 * classic programs loaded without CAP_SYS_ADMIN on CPUs with X86_FEATURE_CLEAR_BHB_LOOP/_HW):
 * both default off and are options.
 *
 * Not modelled (never produced by the programs this project loads): tail calls
 * (emit_bpf_tail_call_*), BPF_PROBE_MEM loads (the verifier's rewrite for BTF pointers) and
 * constant blinding (bpf_jit_harden defaults to 0). They are refused with EOPCODE.
 */
import { BpfError } from './errors.js';
import {
  BPF_ADD,
  BPF_ALU,
  BPF_ALU64,
  BPF_AND,
  BPF_ARSH,
  BPF_ATOMIC,
  BPF_CALL,
  BPF_DIV,
  BPF_DW,
  BPF_END,
  BPF_EXIT,
  BPF_FROM_BE,
  BPF_FROM_LE,
  BPF_IMM,
  BPF_JA,
  BPF_JMP,
  BPF_JMP32,
  BPF_K,
  BPF_LD,
  BPF_LDX,
  BPF_LSH,
  BPF_MEM,
  BPF_MOD,
  BPF_MOV,
  BPF_MUL,
  BPF_NEG,
  BPF_NOSPEC,
  BPF_OR,
  BPF_REG_0,
  BPF_REG_3,
  BPF_REG_4,
  BPF_RSH,
  BPF_ST,
  BPF_STX,
  BPF_SUB,
  BPF_X,
  BPF_XOR,
  bpfClass,
  bpfMode,
  bpfOp,
  bpfSize,
  bpfSrc,
  type EbpfInsn,
} from './insn.js';
import {
  ALU_K,
  calleeRegsUsed,
  emitAtomicInsn,
  emitCmp,
  emitPrologue,
  JMP_COND,
  popCalleeRegs,
  pushCalleeRegs,
  SIMPLE_ALU,
} from './jit-x86-parts.js';
import { AUX_REG, add1reg, add2reg, Emit, isEreg, isImm8, isImm8JmpOffset, isSimm32 } from './x86-emit.js';

export interface JitConfig {
  /** CONFIG_X86_KERNEL_IBT: ENDBR64 at the entry and at X86_TAIL_CALL_OFFSET. */
  readonly ibt: boolean;
  /** CONFIG_SLS: int3 after every ret. */
  readonly sls: boolean;
  /** X86_FEATURE_RETHUNK: return through 'jmp __x86_return_thunk' (5 bytes). */
  readonly retThunk: boolean;
  /** emit_spectre_bhb_barrier() for classic programs: X86_FEATURE_CLEAR_BHB_LOOP / IBHF. */
  readonly bhbBarrier: 'none' | 'loop' | 'ibhf' | 'loop+ibhf';
}

/** Debian 12's linux-image-6.1 cloud kernel on a CPU without RETHUNK/BHB mitigations (header). */
export const DEBIAN_6_1_JIT: JitConfig = { ibt: false, sls: true, retThunk: false, bhbBarrier: 'none' };

/** What the JIT compiles: one function (the main program or one subprogram, jit_subprogs()). */
export interface JitProgram {
  readonly insns: readonly EbpfInsn[];
  /** prog->aux->stack_depth; only zero vs non-zero changes the size ('sub rsp, imm32'). */
  readonly stackDepthBytes: number;
  /** bpf_prog_was_classic(): converted from classic BPF (no nop2 in the prologue). */
  readonly wasClassic: boolean;
  /** prog->aux->func_idx != 0. */
  readonly isSubprog?: boolean;
}

/** Call targets: an address for each BPF_JMP|BPF_CALL (helper id or subprogram), by insn index. */
export type CallTarget = (insn: EbpfInsn, index: number) => number;

export const MAX_PASSES = 20;
export const PADDING_PASSES = MAX_PASSES - 5;
/** BPF_MAX_INSN_SIZE: the most bytes one BPF instruction may become. */
const BPF_MAX_INSN_SIZE = 128;

interface PassState {
  readonly addrs: number[];
  cleanupAddr: number;
}

export interface JitSized {
  readonly program: JitProgram;
  readonly config: JitConfig;
  /** The converged image length in bytes (prog->jited_len). */
  readonly proglenBytes: number;
  /** Passes run until the length stopped changing. */
  readonly passes: number;
  readonly padding: boolean;
  readonly state: { readonly addrs: readonly number[]; readonly cleanupAddr: number };
}

/** A stand-in call target for the sizing passes (kernel text; only rel32 reach matters). */
const SIZING_IP_TARGET = 0;

/**
 * bpf_int_jit_compile()'s loop without an image: passes until the length converges. Throws
 * EOPCODE for an instruction the JIT does not know, EJIT when 20 passes do not converge.
 */
export function jitX86(program: JitProgram, config: JitConfig = DEBIAN_6_1_JIT): JitSized {
  const n = program.insns.length;
  if (n === 0) throw new BpfError('EFORMAT', 'empty eBPF program');
  // "Before first pass, make a rough estimation of addrs[]: each BPF instruction is translated to
  // less than 64 bytes."
  const addrs: number[] = [];
  let proglen = 0;
  for (let i = 0; i <= n; i++) {
    proglen += 64;
    addrs.push(proglen);
  }
  const state: PassState = { addrs, cleanupAddr: proglen };
  let oldproglen = 0;
  let padding = false;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    if (!padding && pass >= PADDING_PASSES) padding = true;
    proglen = doJit(program, config, state, null, () => SIZING_IP_TARGET, padding, null);
    if (proglen === oldproglen) {
      return {
        program,
        config,
        proglenBytes: proglen,
        passes: pass + 1,
        padding,
        state: { addrs: [...state.addrs], cleanupAddr: state.cleanupAddr },
      };
    }
    oldproglen = proglen;
  }
  throw new BpfError('EJIT', `image length did not converge in ${MAX_PASSES} passes`);
}

/**
 * The final pass at the image's address (bpf_int_jit_compile() once `image` is set): the bytes
 * of the program, exactly `sized.proglenBytes` long. `imageVa` is where the first byte will run.
 */
export function emitX86(sized: JitSized, imageVa: number, callTarget: CallTarget): Uint8Array {
  const state: PassState = { addrs: [...sized.state.addrs], cleanupAddr: sized.state.cleanupAddr };
  const out: number[] = [];
  // The pass after convergence: padding turns on if the pass count reached PADDING_PASSES.
  const padding = sized.padding || sized.passes >= PADDING_PASSES;
  const len = doJit(sized.program, sized.config, state, imageVa, callTarget, padding, out);
  if (len !== sized.proglenBytes || out.length !== len) {
    throw new BpfError('EJIT', `proglen=${len} != oldproglen=${sized.proglenBytes}`);
  }
  return Uint8Array.from(out);
}

/** One do_jit() pass. `out` null: a sizing pass (image == NULL). Returns proglen. */
function doJit(
  p: JitProgram,
  c: JitConfig,
  s: PassState,
  imageVa: number | null,
  callTarget: CallTarget,
  jmpPadding: boolean,
  out: number[] | null,
): number {
  const insns = p.insns;
  const addrs = s.addrs;
  const used = calleeRegsUsed(insns);
  const image = imageVa ?? 0;
  let seenExit = false;
  let e = new Emit();
  emitPrologue(e, p, c);
  pushCalleeRegs(e, used);
  let proglen = e.length;
  out?.push(...e.bytes);
  addrs[0] = proglen;
  const n = insns.length;
  for (let i = 1; i <= n; i++) {
    e = new Emit();
    const insn = insns[i - 1];
    const code = insn.code;
    let dst = insn.dst;
    const src = insn.src;
    const imm32 = insn.imm | 0;
    const cls = bpfClass(code);
    // INSN_SZ_DIFF: the previous pass's size of this insn minus what is emitted so far.
    const insnSzDiff = () => addrs[i] - addrs[i - 1] - e.length;
    const emitJmp = (jmpOffset: number): void => {
      if (isImm8JmpOffset(jmpOffset)) {
        if (jmpPadding) {
          const nops = insnSzDiff() - 2;
          if (nops !== 0 && nops !== 3)
            throw new BpfError('EJIT', `unexpected jump padding: ${nops} bytes`, i - 1);
          e.nops(nops);
        }
        e.b(0xeb, jmpOffset);
      } else if (isSimm32(jmpOffset)) {
        e.b(0xe9);
        e.u32(jmpOffset);
      } else {
        throw new BpfError('EJIT', `jmp gen bug ${jmpOffset}`, i - 1);
      }
    };
    const condJmp = (): void => {
      const jmpCond = JMP_COND[bpfOp(code)];
      if (jmpCond === undefined)
        throw new BpfError('EOPCODE', `unknown jump op 0x${code.toString(16)}`, i - 1);
      const target = i + insn.off;
      if (target < 0 || target > n)
        throw new BpfError('EJUMP', `jump to ${target - 1} leaves the program`, i - 1);
      const jmpOffset = addrs[target] - addrs[i];
      if (isImm8JmpOffset(jmpOffset)) {
        if (jmpPadding) {
          const nops = insnSzDiff() - 2;
          if (nops !== 0 && nops !== 4)
            throw new BpfError('EJIT', `unexpected jmp_cond padding: ${nops} bytes`, i - 1);
          e.nops(nops);
        }
        e.b(jmpCond, jmpOffset);
      } else {
        e.b(0x0f, jmpCond + 0x10);
        e.u32(jmpOffset);
      }
    };
    switch (code) {
      case BPF_ALU | BPF_ADD | BPF_X:
      case BPF_ALU | BPF_SUB | BPF_X:
      case BPF_ALU | BPF_AND | BPF_X:
      case BPF_ALU | BPF_OR | BPF_X:
      case BPF_ALU | BPF_XOR | BPF_X:
      case BPF_ALU64 | BPF_ADD | BPF_X:
      case BPF_ALU64 | BPF_SUB | BPF_X:
      case BPF_ALU64 | BPF_AND | BPF_X:
      case BPF_ALU64 | BPF_OR | BPF_X:
      case BPF_ALU64 | BPF_XOR | BPF_X:
        e.maybeMod(dst, src, cls === BPF_ALU64);
        e.b(SIMPLE_ALU[bpfOp(code)], add2reg(0xc0, dst, src));
        break;
      case BPF_ALU64 | BPF_MOV | BPF_X:
      case BPF_ALU | BPF_MOV | BPF_X:
        e.movReg(cls === BPF_ALU64, dst, src);
        break;
      case BPF_ALU | BPF_NEG:
      case BPF_ALU64 | BPF_NEG:
        e.maybe1mod(dst, cls === BPF_ALU64);
        e.b(0xf7, add1reg(0xd8, dst));
        break;
      case BPF_ALU | BPF_ADD | BPF_K:
      case BPF_ALU | BPF_SUB | BPF_K:
      case BPF_ALU | BPF_AND | BPF_K:
      case BPF_ALU | BPF_OR | BPF_K:
      case BPF_ALU | BPF_XOR | BPF_K:
      case BPF_ALU64 | BPF_ADD | BPF_K:
      case BPF_ALU64 | BPF_SUB | BPF_K:
      case BPF_ALU64 | BPF_AND | BPF_K:
      case BPF_ALU64 | BPF_OR | BPF_K:
      case BPF_ALU64 | BPF_XOR | BPF_K: {
        e.maybe1mod(dst, cls === BPF_ALU64);
        const [b3, b2] = ALU_K[bpfOp(code)];
        if (isImm8(imm32)) {
          e.b(0x83, add1reg(b3, dst), imm32);
        } else if (dst === BPF_REG_0) {
          e.b(b2);
          e.u32(imm32);
        } else {
          e.b(0x81, add1reg(b3, dst));
          e.u32(imm32);
        }
        break;
      }
      case BPF_ALU64 | BPF_MOV | BPF_K:
      case BPF_ALU | BPF_MOV | BPF_K:
        e.movImm32(cls === BPF_ALU64, dst, imm32);
        break;
      case BPF_LD | BPF_IMM | BPF_DW: {
        const next = insns[i];
        if (next === undefined) throw new BpfError('EFORMAT', 'ld_imm64 without its second half', i - 1);
        e.movImm64(dst, next.imm, imm32);
        i++; // the second half: only addrs[i] of it is updated below, as in do_jit()
        break;
      }
      case BPF_ALU | BPF_MOD | BPF_X:
      case BPF_ALU | BPF_DIV | BPF_X:
      case BPF_ALU | BPF_MOD | BPF_K:
      case BPF_ALU | BPF_DIV | BPF_K:
      case BPF_ALU64 | BPF_MOD | BPF_X:
      case BPF_ALU64 | BPF_DIV | BPF_X:
      case BPF_ALU64 | BPF_MOD | BPF_K:
      case BPF_ALU64 | BPF_DIV | BPF_K: {
        const w = cls === BPF_ALU64;
        let s2 = src;
        if (dst !== BPF_REG_0) e.b(0x50); // push rax
        if (dst !== BPF_REG_3) e.b(0x52); // push rdx
        if (bpfSrc(code) === BPF_X) {
          if (src === BPF_REG_0 || src === BPF_REG_3) {
            e.mov(AUX_REG, src); // mov r11, src_reg
            s2 = AUX_REG;
          }
        } else {
          e.b(0x49, 0xc7, 0xc3); // mov r11, imm32
          e.u32(imm32);
          s2 = AUX_REG;
        }
        if (dst !== BPF_REG_0) e.movReg(w, BPF_REG_0, dst);
        e.b(0x31, 0xd2); // xor edx, edx
        e.maybe1mod(s2, w);
        e.b(0xf7, add1reg(0xf0, s2)); // div src_reg
        if (bpfOp(code) === BPF_MOD && dst !== BPF_REG_3) e.movReg(w, dst, BPF_REG_3);
        else if (bpfOp(code) === BPF_DIV && dst !== BPF_REG_0) e.movReg(w, dst, BPF_REG_0);
        if (dst !== BPF_REG_3) e.b(0x5a); // pop rdx
        if (dst !== BPF_REG_0) e.b(0x58); // pop rax
        break;
      }
      case BPF_ALU | BPF_MUL | BPF_K:
      case BPF_ALU64 | BPF_MUL | BPF_K:
        e.maybeMod(dst, dst, cls === BPF_ALU64);
        if (isImm8(imm32)) {
          e.b(0x6b, add2reg(0xc0, dst, dst), imm32);
        } else {
          e.b(0x69, add2reg(0xc0, dst, dst));
          e.u32(imm32);
        }
        break;
      case BPF_ALU | BPF_MUL | BPF_X:
      case BPF_ALU64 | BPF_MUL | BPF_X:
        e.maybeMod(src, dst, cls === BPF_ALU64);
        e.b(0x0f, 0xaf, add2reg(0xc0, src, dst));
        break;
      case BPF_ALU | BPF_LSH | BPF_K:
      case BPF_ALU | BPF_RSH | BPF_K:
      case BPF_ALU | BPF_ARSH | BPF_K:
      case BPF_ALU64 | BPF_LSH | BPF_K:
      case BPF_ALU64 | BPF_RSH | BPF_K:
      case BPF_ALU64 | BPF_ARSH | BPF_K: {
        e.maybe1mod(dst, cls === BPF_ALU64);
        const b3 = SIMPLE_ALU[bpfOp(code)];
        if (imm32 === 1) e.b(0xd1, add1reg(b3, dst));
        else e.b(0xc1, add1reg(b3, dst), imm32);
        break;
      }
      case BPF_ALU | BPF_LSH | BPF_X:
      case BPF_ALU | BPF_RSH | BPF_X:
      case BPF_ALU | BPF_ARSH | BPF_X:
      case BPF_ALU64 | BPF_LSH | BPF_X:
      case BPF_ALU64 | BPF_RSH | BPF_X:
      case BPF_ALU64 | BPF_ARSH | BPF_X: {
        if (dst === BPF_REG_4) {
          e.mov(AUX_REG, dst); // the bad case dst == rcx
          dst = AUX_REG;
        }
        if (src !== BPF_REG_4) {
          e.b(0x51); // push rcx
          e.mov(BPF_REG_4, src);
        }
        e.maybe1mod(dst, cls === BPF_ALU64);
        e.b(0xd3, add1reg(SIMPLE_ALU[bpfOp(code)], dst));
        if (src !== BPF_REG_4) e.b(0x59); // pop rcx
        if (insn.dst === BPF_REG_4) e.mov(insn.dst, AUX_REG);
        break;
      }
      case BPF_ALU | BPF_END | BPF_FROM_BE:
        switch (imm32) {
          case 16:
            e.b(0x66); // ror %ax, 8
            if (isEreg(dst)) e.b(0x41);
            e.b(0xc1, add1reg(0xc8, dst), 8);
            if (isEreg(dst))
              e.b(0x45, 0x0f, 0xb7); // movzwl eax, ax
            else e.b(0x0f, 0xb7);
            e.b(add2reg(0xc0, dst, dst));
            break;
          case 32:
            if (isEreg(dst))
              e.b(0x41, 0x0f); // bswap eax
            else e.b(0x0f);
            e.b(add1reg(0xc8, dst));
            break;
          case 64:
            e.b(isEreg(dst) ? 0x49 : 0x48, 0x0f, add1reg(0xc8, dst)); // bswap rax
            break;
          default:
            throw new BpfError('EOPCODE', `byte swap of ${imm32} bits`, i - 1);
        }
        break;
      case BPF_ALU | BPF_END | BPF_FROM_LE:
        switch (imm32) {
          case 16:
            if (isEreg(dst)) e.b(0x45, 0x0f, 0xb7);
            else e.b(0x0f, 0xb7);
            e.b(add2reg(0xc0, dst, dst));
            break;
          case 32:
            if (isEreg(dst)) e.b(0x45);
            e.b(0x89, add2reg(0xc0, dst, dst));
            break;
          case 64:
            break;
          default:
            throw new BpfError('EOPCODE', `byte swap of ${imm32} bits`, i - 1);
        }
        break;
      case BPF_ST | BPF_NOSPEC:
        e.b(0x0f, 0xae, 0xe8); // lfence (every x86-64 CPU has XMM2)
        break;
      case BPF_ST | BPF_MEM | 0x10: // BPF_B
      case BPF_ST | BPF_MEM | 0x08: // BPF_H
      case BPF_ST | BPF_MEM | 0x00: // BPF_W
      case BPF_ST | BPF_MEM | BPF_DW: {
        const size = bpfSize(code);
        if (size === 0x10) e.b(...(isEreg(dst) ? [0x41, 0xc6] : [0xc6]));
        else if (size === 0x08) e.b(...(isEreg(dst) ? [0x66, 0x41, 0xc7] : [0x66, 0xc7]));
        else if (size === 0x00) e.b(...(isEreg(dst) ? [0x41, 0xc7] : [0xc7]));
        else e.b(isEreg(dst) ? 0x49 : 0x48, 0xc7);
        if (isImm8(insn.off)) e.b(add1reg(0x40, dst), insn.off);
        else {
          e.b(add1reg(0x80, dst));
          e.u32(insn.off);
        }
        e.field(imm32, size === 0x10 ? 1 : size === 0x08 ? 2 : 4);
        break;
      }
      case BPF_STX | BPF_MEM | 0x10:
      case BPF_STX | BPF_MEM | 0x08:
      case BPF_STX | BPF_MEM | 0x00:
      case BPF_STX | BPF_MEM | BPF_DW:
        e.stx(bpfSize(code), dst, src, insn.off);
        break;
      case BPF_LDX | BPF_MEM | 0x10:
      case BPF_LDX | BPF_MEM | 0x08:
      case BPF_LDX | BPF_MEM | 0x00:
      case BPF_LDX | BPF_MEM | BPF_DW:
        e.ldx(bpfSize(code), dst, src, insn.off);
        break;
      case BPF_STX | BPF_ATOMIC | 0x00:
      case BPF_STX | BPF_ATOMIC | BPF_DW:
        emitAtomicInsn(e, insn, i - 1);
        break;
      case BPF_JMP | BPF_CALL: {
        if (!imm32) throw new BpfError('EOPCODE', 'call with imm 0', i - 1);
        const ip = image + addrs[i - 1];
        e.patch(0xe8, out === null ? ip + 5 : callTarget(insn, i - 1), ip);
        break;
      }
      case BPF_JMP | BPF_JA:
      case BPF_JMP32 | BPF_JA: {
        const off = cls === BPF_JMP ? insn.off : imm32;
        let jmpOffset: number;
        if (off === -1) jmpOffset = -2;
        else {
          const target = i + off;
          if (target < 0 || target > n)
            throw new BpfError('EJUMP', `ja to ${target - 1} leaves the program`, i - 1);
          jmpOffset = addrs[target] - addrs[i];
        }
        if (jmpOffset === 0) {
          if (jmpPadding) {
            const nops = insnSzDiff();
            if (nops !== 0 && nops !== 2 && nops !== 5) {
              throw new BpfError('EJIT', `unexpected nop jump padding: ${nops} bytes`, i - 1);
            }
            e.nops(nops);
          }
          break;
        }
        emitJmp(jmpOffset);
        break;
      }
      case BPF_JMP | BPF_EXIT:
        if (seenExit) {
          emitJmp(s.cleanupAddr - addrs[i]);
          break;
        }
        seenExit = true;
        s.cleanupAddr = proglen;
        if (p.wasClassic && c.bhbBarrier !== 'none') {
          if (c.bhbBarrier.startsWith('loop')) {
            e.b(0x50, 0x51); // push rax; push rcx
            e.patch(
              0xe8,
              out === null ? image + addrs[i - 1] + 7 : callTarget(insn, -1),
              image + addrs[i - 1] + 2,
            );
            e.b(0x59, 0x58); // pop rcx; pop rax
          }
          if (c.bhbBarrier.endsWith('ibhf')) e.b(0xf3, 0x48, 0x0f, 0x1e, 0xf8);
        }
        popCalleeRegs(e, used);
        e.b(0xc9); // leave
        // emit_return()
        if (c.retThunk) e.b(0xe9, 0, 0, 0, 0);
        else {
          e.b(0xc3);
          if (c.sls) e.b(0xcc);
        }
        break;
      default:
        if ((cls === BPF_JMP || cls === BPF_JMP32) && JMP_COND[bpfOp(code)] !== undefined) {
          emitCmp(e, insn, cls === BPF_JMP);
          condJmp();
          break;
        }
        if (cls === BPF_LDX && bpfMode(code) === 0x20) {
          throw new BpfError(
            'EOPCODE',
            'BPF_PROBE_MEM loads come from the verifier and are not modelled',
            i - 1,
          );
        }
        throw new BpfError('EOPCODE', `unknown opcode 0x${code.toString(16).padStart(2, '0')}`, i - 1);
    }
    const ilen = e.length;
    if (ilen > BPF_MAX_INSN_SIZE) throw new BpfError('EJIT', 'fatal insn size error', i - 1);
    if (out !== null) {
      if (proglen + ilen !== addrs[i])
        throw new BpfError('EJIT', 'bpf_jit: fatal error (addrs moved)', i - 1);
      out.push(...e.bytes);
    }
    proglen += ilen;
    addrs[i] = proglen;
  }
  return proglen;
}
