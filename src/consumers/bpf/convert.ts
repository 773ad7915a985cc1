/**
 * Classic BPF -> eBPF, as the kernel does it: bpf_convert_filter(), convert_bpf_extensions() and
 * convert_bpf_ld_abs() in net/core/filter.c (Linux 6.1.192, Debian's linux-source-6.1).
 *
 * Why the kernel's exact expansion: the JIT sees only the converted program, so every instruction
 * the conversion adds (the A/X reset and ctx move, the skb->data / headlen cache, the inline
 * fast path and helper-call slow path of each packet load, the two-instruction jumps) is code in
 * the image and bytes in the allocation. The expansion is instruction for instruction the C code;
 * jump offsets come from the same two passes (lengths first, then offsets from `addrs`).
 *
 * Facts that depend on the kernel build, with their source:
 * - CONFIG_HAVE_EFFICIENT_UNALIGNED_ACCESS=y on x86-64 (Debian 6.1 config), so every absolute
 *   load with a non-negative offset gets the inline fast path.
 * - struct sk_buff / net_device field offsets (SKB_LAYOUT below) are read from the BTF of a 6.18
 *   x86-64 kernel (pahole-equivalent); 6.1 differs in detail, ASSUMED to agree in what changes the
 *   image: which offsets fit a signed 8-bit displacement (len, data_len, queue_mapping, dev) and
 *   which need 32 bits (data, the `headers` group, net_device fields).
 * - Helper calls (BPF_EMIT_CALL) carry a small helper id in `imm` (BpfHelper); the JIT resolves
 *   it to an address. The kernel stores func - __bpf_call_base; only the call's presence and its
 *   rel32 reach matter to the image.
 */
import { BpfError } from './errors.js';
import {
  BPF_A,
  BPF_ABS,
  BPF_ADD,
  BPF_ALU,
  BPF_ALU64,
  BPF_AND,
  BPF_B,
  BPF_CALL,
  BPF_DIV,
  BPF_DW,
  BPF_END,
  BPF_EXIT,
  BPF_FROM_BE,
  BPF_H,
  BPF_IMM,
  BPF_IND,
  BPF_JA,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JLE,
  BPF_JLT,
  BPF_JMP,
  BPF_JNE,
  BPF_JSET,
  BPF_JSGE,
  BPF_JSLT,
  BPF_K,
  BPF_LD,
  BPF_LDX,
  BPF_LEN,
  BPF_LSH,
  BPF_MEM,
  BPF_MISC,
  BPF_MOD,
  BPF_MOV,
  BPF_MSH,
  BPF_MUL,
  BPF_NEG,
  BPF_OR,
  BPF_REG_A,
  BPF_REG_ARG1,
  BPF_REG_ARG2,
  BPF_REG_ARG3,
  BPF_REG_ARG4,
  BPF_REG_CTX,
  BPF_REG_D,
  BPF_REG_FP,
  BPF_REG_H,
  BPF_REG_TMP,
  BPF_REG_X,
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
  bpfClass,
  bpfMode,
  bpfOp,
  bpfRval,
  bpfSize,
  bpfSizeBytes,
  bpfSrc,
  type ClassicInsn,
  type EbpfInsn,
  ebpf,
  SKF_AD_ALU_XOR_X,
  SKF_AD_CPU,
  SKF_AD_HATYPE,
  SKF_AD_IFINDEX,
  SKF_AD_MARK,
  SKF_AD_NLATTR,
  SKF_AD_NLATTR_NEST,
  SKF_AD_OFF,
  SKF_AD_PAY_OFFSET,
  SKF_AD_PKTTYPE,
  SKF_AD_PROTOCOL,
  SKF_AD_QUEUE,
  SKF_AD_RANDOM,
  SKF_AD_RXHASH,
  SKF_AD_VLAN_TAG,
  SKF_AD_VLAN_TAG_PRESENT,
  SKF_AD_VLAN_TPID,
} from './insn.js';

/** The kernel functions a converted classic program calls (imm of its BPF_CALL). */
export enum BpfHelper {
  SkbLoad8 = 1,
  SkbLoad16 = 2,
  SkbLoad32 = 3,
  SkbGetPayOffset = 4,
  SkbGetNlattr = 5,
  SkbGetNlattrNest = 6,
  GetRawCpuId = 7,
  UserRndU32 = 8,
}

/** Field offsets the conversion loads from (see the header for their source). */
export const SKB_LAYOUT = {
  dev: 16,
  len: 112,
  dataLen: 116,
  queueMapping: 124,
  pktType: 128,
  /** PKT_TYPE_MAX on a little-endian bitfield build. */
  pktTypeMax: 7,
  vlanPresent: 130,
  hash: 148,
  vlanProto: 152,
  vlanTci: 154,
  mark: 164,
  protocol: 176,
  data: 200,
  netdevIfindex: 224,
  netdevType: 536,
} as const;

export interface ConvertedProgram {
  readonly insns: readonly EbpfInsn[];
  /** prog->aux->stack_depth: the deepest scratch cell stored (k * 4 + 4), 0 if none. */
  readonly stackDepthBytes: number;
  /** A packet load was seen (the skb->data / headlen cache is in the prologue). */
  readonly seenLdAbs: boolean;
}

const S16_MIN = -32768;
const S16_MAX = 32767;

const mov64 = (dst: number, src: number) => ebpf(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
const mov64Imm = (dst: number, imm: number) => ebpf(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
const mov32Imm = (dst: number, imm: number) => ebpf(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm);
const alu32Reg = (op: number, dst: number, src: number) => ebpf(BPF_ALU | op | BPF_X, dst, src, 0, 0);
const alu32Imm = (op: number, dst: number, imm: number) => ebpf(BPF_ALU | op | BPF_K, dst, 0, 0, imm);
const alu64Imm = (op: number, dst: number, imm: number) => ebpf(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm);
const ldxMem = (size: number, dst: number, src: number, off: number) =>
  ebpf(BPF_LDX | size | BPF_MEM, dst, src, off, 0);
const stxMem = (size: number, dst: number, src: number, off: number) =>
  ebpf(BPF_STX | size | BPF_MEM, dst, src, off, 0);
const jmpImm = (op: number, dst: number, imm: number, off: number) =>
  ebpf(BPF_JMP | op | BPF_K, dst, 0, off, imm);
const jmpA = (off: number) => ebpf(BPF_JMP | BPF_JA, 0, 0, off, 0);
const endianBe = (dst: number, bits: number) => ebpf(BPF_ALU | BPF_END | BPF_FROM_BE, dst, 0, 0, bits);
const call = (h: BpfHelper) => ebpf(BPF_JMP | BPF_CALL, 0, 0, 0, h);
const exit = () => ebpf(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

/** convert_bpf_extensions(): an ancillary load, or null if `f` is not one. */
function convertExtension(f: ClassicInsn): EbpfInsn[] | null {
  const L = SKB_LAYOUT;
  const ctxCall = (h: BpfHelper) => [
    mov64(BPF_REG_ARG1, BPF_REG_CTX),
    mov64(BPF_REG_ARG2, BPF_REG_A),
    mov64(BPF_REG_ARG3, BPF_REG_X),
    call(h),
  ];
  switch ((f.k | 0) - SKF_AD_OFF) {
    case SKF_AD_PROTOCOL:
      return [ldxMem(BPF_H, BPF_REG_A, BPF_REG_CTX, L.protocol), endianBe(BPF_REG_A, 16)];
    case SKF_AD_PKTTYPE:
      return [ldxMem(BPF_B, BPF_REG_A, BPF_REG_CTX, L.pktType), alu32Imm(BPF_AND, BPF_REG_A, L.pktTypeMax)];
    case SKF_AD_IFINDEX:
    case SKF_AD_HATYPE:
      return [
        ldxMem(BPF_DW, BPF_REG_TMP, BPF_REG_CTX, L.dev),
        jmpImm(BPF_JNE, BPF_REG_TMP, 0, 1),
        exit(),
        (f.k | 0) - SKF_AD_OFF === SKF_AD_IFINDEX
          ? ldxMem(BPF_W, BPF_REG_A, BPF_REG_TMP, L.netdevIfindex)
          : ldxMem(BPF_H, BPF_REG_A, BPF_REG_TMP, L.netdevType),
      ];
    case SKF_AD_MARK:
      return [ldxMem(BPF_W, BPF_REG_A, BPF_REG_CTX, L.mark)];
    case SKF_AD_RXHASH:
      return [ldxMem(BPF_W, BPF_REG_A, BPF_REG_CTX, L.hash)];
    case SKF_AD_QUEUE:
      return [ldxMem(BPF_H, BPF_REG_A, BPF_REG_CTX, L.queueMapping)];
    case SKF_AD_VLAN_TAG:
      return [ldxMem(BPF_H, BPF_REG_A, BPF_REG_CTX, L.vlanTci)];
    case SKF_AD_VLAN_TAG_PRESENT:
      // PKT_VLAN_PRESENT_BIT is 0 on a little-endian bitfield build: no shift, then & 1.
      return [ldxMem(BPF_B, BPF_REG_A, BPF_REG_CTX, L.vlanPresent), alu32Imm(BPF_AND, BPF_REG_A, 1)];
    case SKF_AD_VLAN_TPID:
      return [ldxMem(BPF_H, BPF_REG_A, BPF_REG_CTX, L.vlanProto), endianBe(BPF_REG_A, 16)];
    case SKF_AD_PAY_OFFSET:
      return ctxCall(BpfHelper.SkbGetPayOffset);
    case SKF_AD_NLATTR:
      return ctxCall(BpfHelper.SkbGetNlattr);
    case SKF_AD_NLATTR_NEST:
      return ctxCall(BpfHelper.SkbGetNlattrNest);
    case SKF_AD_CPU:
      return ctxCall(BpfHelper.GetRawCpuId);
    case SKF_AD_RANDOM:
      return ctxCall(BpfHelper.UserRndU32);
    case SKF_AD_ALU_XOR_X:
      return [alu32Reg(BPF_XOR, BPF_REG_A, BPF_REG_X)];
    default:
      return null;
  }
}

/** convert_bpf_ld_abs(): a packet load (ABS or IND, 1/2/4 bytes) at classic offset `k`. */
function convertLdAbs(code: number, k: number): EbpfInsn[] {
  const size = bpfSize(code);
  const sizeBytes = bpfSizeBytes(size);
  const endian = size === BPF_H || size === BPF_W;
  const indirect = bpfMode(code) === BPF_IND;
  const offset = k | 0;
  const out: EbpfInsn[] = [];
  if (!indirect && offset >= 0) {
    const ldxOffOk = offset <= S16_MAX;
    out.push(mov64(BPF_REG_TMP, BPF_REG_H));
    if (offset) out.push(alu64Imm(BPF_SUB, BPF_REG_TMP, offset));
    out.push(jmpImm(BPF_JSLT, BPF_REG_TMP, sizeBytes, 2 + (endian ? 1 : 0) + (ldxOffOk ? 0 : 2)));
    if (ldxOffOk) {
      out.push(ldxMem(size, BPF_REG_A, BPF_REG_D, offset));
    } else {
      out.push(
        mov64(BPF_REG_TMP, BPF_REG_D),
        alu64Imm(BPF_ADD, BPF_REG_TMP, offset),
        ldxMem(size, BPF_REG_A, BPF_REG_TMP, 0),
      );
    }
    if (endian) out.push(endianBe(BPF_REG_A, sizeBytes * 8));
    out.push(jmpA(8));
  }
  out.push(mov64(BPF_REG_ARG1, BPF_REG_CTX), mov64(BPF_REG_ARG2, BPF_REG_D), mov64(BPF_REG_ARG3, BPF_REG_H));
  if (!indirect) {
    out.push(mov64Imm(BPF_REG_ARG4, offset));
  } else {
    out.push(mov64(BPF_REG_ARG4, BPF_REG_X));
    if (k) out.push(alu64Imm(BPF_ADD, BPF_REG_ARG4, offset));
  }
  out.push(
    call(size === BPF_B ? BpfHelper.SkbLoad8 : size === BPF_H ? BpfHelper.SkbLoad16 : BpfHelper.SkbLoad32),
  );
  out.push(jmpImm(BPF_JSGE, BPF_REG_A, 0, 2), alu32Reg(BPF_XOR, BPF_REG_A, BPF_REG_A), exit());
  return out;
}

/** The classic ALU codes that "map as-is" (bpf_convert_filter()'s first case list). */
const CLASSIC_ALU: ReadonlySet<number> = new Set([
  ...[BPF_ADD, BPF_SUB, BPF_AND, BPF_OR, BPF_LSH, BPF_RSH, BPF_XOR, BPF_MUL, BPF_DIV, BPF_MOD].flatMap(
    (op) => [BPF_ALU | op | BPF_K, BPF_ALU | op | BPF_X],
  ),
  BPF_ALU | BPF_NEG,
]);
const CLASSIC_PACKET_LOADS: ReadonlySet<number> = new Set(
  [BPF_W, BPF_H, BPF_B].flatMap((size) => [BPF_LD | BPF_ABS | size, BPF_LD | BPF_IND | size]),
);

/** One classic instruction's eBPF expansion; `jump(target, indexInExpansion)` gives offsets. */
function expand(
  f: ClassicInsn,
  i: number,
  len: number,
  jump: (target: number, at: number) => number,
  seen: { ldAbs: boolean; stackDepth: number },
): EbpfInsn[] {
  const code = f.code;
  const cls = bpfClass(code);
  const k = f.k;
  const emitJmp = (codeJ: number, target: number, at: number, dst = 0, src = 0, imm = 0): EbpfInsn => {
    if (target >= len || target < 0)
      throw new BpfError('EJUMP', `jump target ${target} outside the program`, i);
    const off = jump(target, at);
    if (off < S16_MIN || off > S16_MAX)
      throw new BpfError('EJUMP', `converted jump offset ${off} overflows s16`, i);
    return ebpf(codeJ, dst, src, off, imm);
  };
  switch (code) {
    case BPF_JMP | BPF_JA:
      return [emitJmp(code, i + k + 1, 0)];
    case BPF_JMP | BPF_JEQ | BPF_K:
    case BPF_JMP | BPF_JEQ | BPF_X:
    case BPF_JMP | BPF_JSET | BPF_K:
    case BPF_JMP | BPF_JSET | BPF_X:
    case BPF_JMP | BPF_JGT | BPF_K:
    case BPF_JMP | BPF_JGT | BPF_X:
    case BPF_JMP | BPF_JGE | BPF_K:
    case BPF_JMP | BPF_JGE | BPF_X: {
      const out: EbpfInsn[] = [];
      let src: number;
      let imm: number;
      let bpfSrcBits: number;
      if (bpfSrc(code) === BPF_K && (k | 0) < 0) {
        // "BPF immediates are signed, zero extend immediate into tmp register".
        out.push(mov32Imm(BPF_REG_TMP, k));
        src = BPF_REG_TMP;
        imm = 0;
        bpfSrcBits = BPF_X;
      } else {
        imm = k | 0;
        bpfSrcBits = bpfSrc(code);
        src = bpfSrcBits === BPF_X ? BPF_REG_X : 0;
      }
      const op = bpfOp(code);
      if (f.jf === 0) {
        out.push(emitJmp(BPF_JMP | op | bpfSrcBits, i + f.jt + 1, out.length, BPF_REG_A, src, imm));
        return out;
      }
      if (f.jt === 0 && (op === BPF_JEQ || op === BPF_JGT || op === BPF_JGE)) {
        const neg = op === BPF_JEQ ? BPF_JNE : op === BPF_JGT ? BPF_JLE : BPF_JLT;
        out.push(emitJmp(BPF_JMP | neg | bpfSrcBits, i + f.jf + 1, out.length, BPF_REG_A, src, imm));
        return out;
      }
      out.push(emitJmp(BPF_JMP | op | bpfSrcBits, i + f.jt + 1, out.length, BPF_REG_A, src, imm));
      out.push(emitJmp(BPF_JMP | BPF_JA, i + f.jf + 1, out.length));
      return out;
    }
    case BPF_LDX | BPF_MSH | BPF_B: {
      seen.ldAbs = true;
      return [
        mov64(BPF_REG_X, BPF_REG_A),
        ...convertLdAbs(BPF_LD | BPF_ABS | BPF_B, k),
        alu32Imm(BPF_AND, BPF_REG_A, 0xf),
        alu32Imm(BPF_LSH, BPF_REG_A, 2),
        mov64(BPF_REG_TMP, BPF_REG_X),
        mov64(BPF_REG_X, BPF_REG_A),
        mov64(BPF_REG_A, BPF_REG_TMP),
      ];
    }
    case BPF_RET | BPF_A:
    case BPF_RET | BPF_K:
      return bpfRval(code) === BPF_K ? [mov32Imm(BPF_REG_A, k), exit()] : [exit()];
    case BPF_ST:
    case BPF_STX: {
      const stackOff = k * 4 + 4;
      seen.stackDepth = Math.max(seen.stackDepth, stackOff);
      return [stxMem(BPF_W, BPF_REG_FP, cls === BPF_ST ? BPF_REG_A : BPF_REG_X, -stackOff)];
    }
    case BPF_LD | BPF_MEM:
    case BPF_LDX | BPF_MEM:
      return [ldxMem(BPF_W, cls === BPF_LD ? BPF_REG_A : BPF_REG_X, BPF_REG_FP, -(k * 4 + 4))];
    case BPF_LD | BPF_IMM:
    case BPF_LDX | BPF_IMM:
      return [mov32Imm(cls === BPF_LD ? BPF_REG_A : BPF_REG_X, k)];
    case BPF_MISC | BPF_TAX:
      return [mov64(BPF_REG_X, BPF_REG_A)];
    case BPF_MISC | BPF_TXA:
      return [mov64(BPF_REG_A, BPF_REG_X)];
    case BPF_LD | BPF_W | BPF_LEN:
    case BPF_LDX | BPF_W | BPF_LEN:
      return [ldxMem(BPF_W, cls === BPF_LD ? BPF_REG_A : BPF_REG_X, BPF_REG_CTX, SKB_LAYOUT.len)];
    case BPF_LDX | BPF_W | BPF_ABS:
      // seccomp_data fields, after seccomp_check_filter()'s rewrite: A = *(u32 *)(ctx + K).
      return [ldxMem(BPF_W, BPF_REG_A, BPF_REG_CTX, k | 0)];
    default:
      break;
  }
  const isAlu = CLASSIC_ALU.has(code);
  const isLoad = CLASSIC_PACKET_LOADS.has(code);
  if (!isAlu && !isLoad) throw new BpfError('EOPCODE', `unknown classic opcode 0x${code.toString(16)}`, i);
  if (isLoad) {
    if (bpfMode(code) === BPF_ABS) {
      const ext = convertExtension(f);
      if (ext !== null) return ext;
    }
    seen.ldAbs = true;
    return convertLdAbs(code, k);
  }
  const out: EbpfInsn[] = [];
  if (code === (BPF_ALU | BPF_DIV | BPF_X) || code === (BPF_ALU | BPF_MOD | BPF_X)) {
    // "Error with exception code on div/mod by 0. For cBPF programs, this was always return 0."
    out.push(
      ebpf(BPF_ALU | BPF_MOV | BPF_X, BPF_REG_X, BPF_REG_X, 0, 0),
      jmpImm(BPF_JNE, BPF_REG_X, 0, 2),
      alu32Reg(BPF_XOR, BPF_REG_A, BPF_REG_A),
      exit(),
    );
  }
  out.push(ebpf(code, BPF_REG_A, BPF_REG_X, 0, k | 0));
  return out;
}

/**
 * bpf_convert_filter(): the eBPF program the kernel JITs for a checked classic program (run
 * checkClassic, and seccompCheckFilter for seccomp, first: the kernel converts only after both).
 */
export function convertClassic(prog: readonly ClassicInsn[]): ConvertedProgram {
  const len = prog.length;
  if (len <= 0 || len > 4096) throw new BpfError('EFORMAT', `program length ${len} outside 1..4096`);
  // Pass 1: lengths (offsets do not change a length), and whether a packet load is seen.
  const seen = { ldAbs: false, stackDepth: 0 };
  const lengths = prog.map((f, i) => expand(f, i, len, () => 0, seen).length);
  const prologueLen = seen.ldAbs ? 7 : 3;
  // addrs[i]: the eBPF index where classic insn i starts (as the kernel's second pass records).
  const addrs: number[] = [];
  let at = prologueLen;
  for (const n of lengths) {
    addrs.push(at);
    at += n;
  }
  const insns: EbpfInsn[] = [
    alu32Reg(BPF_XOR, BPF_REG_A, BPF_REG_A),
    alu32Reg(BPF_XOR, BPF_REG_X, BPF_REG_X),
    mov64(BPF_REG_CTX, BPF_REG_ARG1),
  ];
  if (seen.ldAbs) {
    insns.push(
      ldxMem(BPF_DW, BPF_REG_D, BPF_REG_CTX, SKB_LAYOUT.data),
      ldxMem(BPF_W, BPF_REG_H, BPF_REG_CTX, SKB_LAYOUT.len),
      ldxMem(BPF_W, BPF_REG_TMP, BPF_REG_CTX, SKB_LAYOUT.dataLen),
      alu32Reg(BPF_SUB, BPF_REG_H, BPF_REG_TMP),
    );
  }
  const seen2 = { ldAbs: false, stackDepth: 0 };
  prog.forEach((f, i) => {
    // BPF_EMIT_JMP: off = addrs[target] - addrs[i] - 1, minus the jump's index in the expansion.
    const out = expand(f, i, len, (target, idx) => addrs[target] - addrs[i] - 1 - idx, seen2);
    insns.push(...out);
  });
  if (insns.length !== at) throw new BpfError('EJIT', 'conversion length changed between passes');
  return { insns, stackDepthBytes: seen2.stackDepth, seenLdAbs: seen.ldAbs };
}
