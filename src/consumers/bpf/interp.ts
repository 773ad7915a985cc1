/**
 * A classic BPF interpreter: the oracle the JIT'd code is checked against.
 *
 * Why written from the classic semantics and not from the converter: the point of an oracle is to
 * be wrong in different ways than the thing it checks. This runs the sock_filter program as
 * written (before bpf_convert_filter(), before the seccomp rewrite) with the semantics classic
 * BPF has always had (bpf(4), libpcap's bpf_filter(), and the kernel's own classic rules):
 * 32-bit unsigned A and X, sixteen scratch cells, loads that fail (out of bounds) end the program
 * with 0, division by X == 0 returns 0, a return value of A or K.
 *
 * Two environments: a packet (socket filters: absolute loads index the packet bytes, LEN is its
 * length) and a struct seccomp_data (seccomp filters: absolute word loads read the 64-byte record,
 * LEN is 64). Ancillary loads (SKF_AD_*) and negative offsets are not part of either oracle
 * (tcpdump's offline programs and libseccomp's filters never use them): running one throws.
 */
import { BpfError } from './errors.js';
import {
  BPF_A,
  BPF_ABS,
  BPF_ADD,
  BPF_ALU,
  BPF_AND,
  BPF_B,
  BPF_DIV,
  BPF_H,
  BPF_IMM,
  BPF_IND,
  BPF_JA,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JMP,
  BPF_JSET,
  BPF_LD,
  BPF_LDX,
  BPF_LEN,
  BPF_LSH,
  BPF_MEM,
  BPF_MISC,
  BPF_MOD,
  BPF_MSH,
  BPF_MUL,
  BPF_NEG,
  BPF_OR,
  BPF_RET,
  BPF_RSH,
  BPF_ST,
  BPF_STX,
  BPF_SUB,
  BPF_TAX,
  BPF_TXA,
  BPF_W,
  BPF_X,
  BPF_XOR,
  type ClassicInsn,
} from './insn.js';

export type ClassicEnv = { readonly kind: 'packet' | 'seccomp'; readonly bytes: Uint8Array };

/** Run `prog` over `env`; returns the u32 the program returns. */
export function runClassic(prog: readonly ClassicInsn[], env: ClassicEnv): number {
  const p = env.bytes;
  const mem = new Uint32Array(16);
  let A = 0;
  let X = 0;
  let pc = 0;
  // A load of `n` bytes at `at`, big-endian for packets, host (little-endian) order for
  // seccomp_data (the kernel loads its fields as native u32); null when out of bounds.
  const load = (at: number, n: number): number | null => {
    if (at < 0 || at + n > p.length || !Number.isSafeInteger(at)) return null;
    if (env.kind === 'seccomp') {
      if (n !== 4 || at % 4 !== 0) throw new BpfError('EFORMAT', `seccomp load of ${n} bytes at ${at}`, pc);
      return (p[at] | (p[at + 1] << 8) | (p[at + 2] << 16) | (p[at + 3] << 24)) >>> 0;
    }
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + p[at + i];
    return v >>> 0;
  };
  const sizeOf = (code: number) => ((code & 0x18) === BPF_W ? 4 : (code & 0x18) === BPF_H ? 2 : 1);
  for (let steps = 0; steps <= prog.length; steps++) {
    if (pc < 0 || pc >= prog.length) throw new BpfError('EJUMP', `pc ${pc} left the program`);
    const f = prog[pc];
    const k = f.k >>> 0;
    pc++;
    switch (f.code & 0x07) {
      case BPF_RET:
        return ((f.code & 0x18) === BPF_A ? A : k) >>> 0;
      case BPF_LD:
        switch (f.code & 0xe0) {
          case BPF_ABS:
          case BPF_IND: {
            const at = ((f.code & 0xe0) === BPF_IND ? X : 0) + (k | 0);
            if ((k | 0) < 0)
              throw new BpfError('EFORMAT', 'ancillary or negative loads are not in the oracle', pc - 1);
            const v = load(at, sizeOf(f.code));
            if (v === null) return 0;
            A = v;
            break;
          }
          case BPF_LEN:
            A = p.length;
            break;
          case BPF_IMM:
            A = k;
            break;
          case BPF_MEM:
            A = mem[k];
            break;
          default:
            throw new BpfError('EOPCODE', `ld mode 0x${f.code.toString(16)}`, pc - 1);
        }
        break;
      case BPF_LDX:
        switch (f.code & 0xe0) {
          case BPF_IMM:
            X = k;
            break;
          case BPF_MEM:
            X = mem[k];
            break;
          case BPF_LEN:
            X = p.length;
            break;
          case BPF_MSH: {
            if ((f.code & 0x18) !== BPF_B) throw new BpfError('EOPCODE', 'msh of a non-byte', pc - 1);
            const v = load(k, 1);
            if (v === null) return 0;
            X = (v & 0xf) * 4;
            break;
          }
          default:
            throw new BpfError('EOPCODE', `ldx mode 0x${f.code.toString(16)}`, pc - 1);
        }
        break;
      case BPF_ST:
        mem[k] = A;
        break;
      case BPF_STX:
        mem[k] = X;
        break;
      case BPF_ALU: {
        const v = (f.code & 0x08) === BPF_X ? X : k;
        switch (f.code & 0xf0) {
          case BPF_ADD:
            A = (A + v) >>> 0;
            break;
          case BPF_SUB:
            A = (A - v) >>> 0;
            break;
          case BPF_MUL:
            A = Math.imul(A, v) >>> 0;
            break;
          case BPF_DIV:
            if (v === 0) return 0;
            A = Math.floor(A / v) >>> 0;
            break;
          case BPF_MOD:
            if (v === 0) return 0;
            A = (A % v) >>> 0;
            break;
          case BPF_AND:
            A = (A & v) >>> 0;
            break;
          case BPF_OR:
            A = (A | v) >>> 0;
            break;
          case BPF_XOR:
            A = (A ^ v) >>> 0;
            break;
          case BPF_LSH:
            A = v >= 32 ? 0 : (A << v) >>> 0;
            break;
          case BPF_RSH:
            A = v >= 32 ? 0 : A >>> v;
            break;
          case BPF_NEG:
            A = -A >>> 0;
            break;
          default:
            throw new BpfError('EOPCODE', `alu op 0x${f.code.toString(16)}`, pc - 1);
        }
        break;
      }
      case BPF_JMP: {
        const op = f.code & 0xf0;
        if (op === BPF_JA) {
          pc += k;
          break;
        }
        const v = (f.code & 0x08) === BPF_X ? X : k;
        let taken: boolean;
        if (op === BPF_JEQ) taken = A === v;
        else if (op === BPF_JGT) taken = A > v;
        else if (op === BPF_JGE) taken = A >= v;
        else if (op === BPF_JSET) taken = (A & v) !== 0;
        else throw new BpfError('EOPCODE', `jmp op 0x${f.code.toString(16)}`, pc - 1);
        pc += taken ? f.jt : f.jf;
        break;
      }
      case BPF_MISC:
        if ((f.code & 0xf8) === BPF_TAX) X = A;
        else if ((f.code & 0xf8) === BPF_TXA) A = X;
        else throw new BpfError('EOPCODE', `misc op 0x${f.code.toString(16)}`, pc - 1);
        break;
    }
  }
  throw new BpfError('EJUMP', 'program ran past its length without returning');
}
