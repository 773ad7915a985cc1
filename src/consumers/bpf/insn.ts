/**
 * BPF instruction formats and opcode constants, classic (struct sock_filter) and extended
 * (struct bpf_insn), as the kernel's uapi headers define them (include/uapi/linux/bpf_common.h,
 * filter.h, bpf.h; include/linux/filter.h for the kernel-internal ones; Linux 6.1).
 *
 * Why one file: bpf_convert_filter() maps classic codes onto eBPF codes of the same value where
 * the meanings agree (every BPF_ALU op, BPF_JMP's JA/JEQ/JGT/JGE/JSET), so the converter, the
 * JIT, the interpreter oracle and the ELF reader must share one set of numbers.
 */

// Instruction classes (bpf_common.h; BPF_JMP32/BPF_ALU64 from bpf.h reuse classic RET/MISC).
export const BPF_LD = 0x00;
export const BPF_LDX = 0x01;
export const BPF_ST = 0x02;
export const BPF_STX = 0x03;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_MISC = 0x07;
export const BPF_JMP32 = 0x06;
export const BPF_ALU64 = 0x07;

// Sizes.
export const BPF_W = 0x00;
export const BPF_H = 0x08;
export const BPF_B = 0x10;
export const BPF_DW = 0x18;

// Modes.
export const BPF_IMM = 0x00;
export const BPF_ABS = 0x20;
export const BPF_IND = 0x40;
export const BPF_MEM = 0x60;
export const BPF_LEN = 0x80;
export const BPF_MSH = 0xa0;
export const BPF_ATOMIC = 0xc0;
/** Kernel-internal (include/linux/filter.h): LDX the verifier rewrote to a faulting-safe load. */
export const BPF_PROBE_MEM = 0x20;
/** Kernel-internal: the speculation barrier BPF_ST | BPF_NOSPEC. */
export const BPF_NOSPEC = 0xc0;

// ALU operations.
export const BPF_ADD = 0x00;
export const BPF_SUB = 0x10;
export const BPF_MUL = 0x20;
export const BPF_DIV = 0x30;
export const BPF_OR = 0x40;
export const BPF_AND = 0x50;
export const BPF_LSH = 0x60;
export const BPF_RSH = 0x70;
export const BPF_NEG = 0x80;
export const BPF_MOD = 0x90;
export const BPF_XOR = 0xa0;
export const BPF_MOV = 0xb0;
export const BPF_ARSH = 0xc0;
export const BPF_END = 0xd0;
export const BPF_FROM_LE = 0x00;
export const BPF_FROM_BE = 0x08;

// Jump operations.
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_JNE = 0x50;
export const BPF_JSGT = 0x60;
export const BPF_JSGE = 0x70;
export const BPF_CALL = 0x80;
export const BPF_EXIT = 0x90;
export const BPF_JLT = 0xa0;
export const BPF_JLE = 0xb0;
export const BPF_JSLT = 0xc0;
export const BPF_JSLE = 0xd0;
/** Kernel-internal: BPF_JMP | BPF_TAIL_CALL after the verifier's fixups. */
export const BPF_TAIL_CALL = 0xf0;

// Sources.
export const BPF_K = 0x00;
export const BPF_X = 0x08;

// Classic only.
export const BPF_A = 0x10;
export const BPF_TAX = 0x00;
export const BPF_TXA = 0x80;
export const BPF_MEMWORDS = 16;
export const BPF_MAXINSNS = 4096;

// Atomic ops (in imm).
export const BPF_FETCH = 0x01;
export const BPF_XCHG = 0xe0 | BPF_FETCH;
export const BPF_CMPXCHG = 0xf0 | BPF_FETCH;

// Pseudo sources (bpf.h).
export const BPF_PSEUDO_MAP_FD = 1;
export const BPF_PSEUDO_MAP_VALUE = 2;
export const BPF_PSEUDO_CALL = 1;

// Classic ancillary loads (uapi filter.h): SKF_AD_OFF + SKF_AD_*.
export const SKF_AD_OFF = -0x1000;
export const SKF_AD_PROTOCOL = 0;
export const SKF_AD_PKTTYPE = 4;
export const SKF_AD_IFINDEX = 8;
export const SKF_AD_NLATTR = 12;
export const SKF_AD_NLATTR_NEST = 16;
export const SKF_AD_MARK = 20;
export const SKF_AD_QUEUE = 24;
export const SKF_AD_HATYPE = 28;
export const SKF_AD_RXHASH = 32;
export const SKF_AD_CPU = 36;
export const SKF_AD_ALU_XOR_X = 40;
export const SKF_AD_VLAN_TAG = 44;
export const SKF_AD_VLAN_TAG_PRESENT = 48;
export const SKF_AD_PAY_OFFSET = 52;
export const SKF_AD_RANDOM = 56;
export const SKF_AD_VLAN_TPID = 60;
export const SKF_AD_MAX = 64;

export const bpfClass = (code: number): number => code & 0x07;
export const bpfSize = (code: number): number => code & 0x18;
export const bpfMode = (code: number): number => code & 0xe0;
export const bpfOp = (code: number): number => code & 0xf0;
export const bpfSrc = (code: number): number => code & 0x08;
export const bpfRval = (code: number): number => code & 0x18;
export const bpfMiscOp = (code: number): number => code & 0xf8;

/** Bytes of a load/store of BPF size `size` (bpf_size_to_bytes()). */
export function bpfSizeBytes(size: number): number {
  switch (size) {
    case BPF_B:
      return 1;
    case BPF_H:
      return 2;
    case BPF_W:
      return 4;
    default:
      return 8;
  }
}

/** struct sock_filter: u16 code, u8 jt, u8 jf, u32 k. */
export interface ClassicInsn {
  readonly code: number;
  readonly jt: number;
  readonly jf: number;
  /** u32, stored as a non-negative number. */
  readonly k: number;
}

/** struct bpf_insn: u8 code, dst_reg:4, src_reg:4, s16 off, s32 imm. */
export interface EbpfInsn {
  readonly code: number;
  readonly dst: number;
  readonly src: number;
  /** s16. */
  readonly off: number;
  /** s32. */
  readonly imm: number;
}

/** eBPF registers (bpf.h) and the names filter.h gives them for converted classic programs. */
export const BPF_REG_0 = 0;
export const BPF_REG_1 = 1;
export const BPF_REG_2 = 2;
export const BPF_REG_3 = 3;
export const BPF_REG_4 = 4;
export const BPF_REG_5 = 5;
export const BPF_REG_6 = 6;
export const BPF_REG_7 = 7;
export const BPF_REG_8 = 8;
export const BPF_REG_9 = 9;
export const BPF_REG_FP = 10;
/** include/linux/filter.h: BPF_REG_AX = MAX_BPF_REG, the JIT's blinding/scratch register. */
export const BPF_REG_AX = 11;
export const BPF_REG_A = BPF_REG_0;
export const BPF_REG_X = BPF_REG_7;
export const BPF_REG_TMP = BPF_REG_2;
export const BPF_REG_D = BPF_REG_8;
export const BPF_REG_H = BPF_REG_9;
export const BPF_REG_CTX = BPF_REG_6;
export const BPF_REG_ARG1 = BPF_REG_1;
export const BPF_REG_ARG2 = BPF_REG_2;
export const BPF_REG_ARG3 = BPF_REG_3;
export const BPF_REG_ARG4 = BPF_REG_4;

export function ebpf(code: number, dst: number, src: number, off: number, imm: number): EbpfInsn {
  return { code, dst, src, off, imm: imm | 0 };
}

/** Encode eBPF instructions in the kernel's 8-byte little-endian layout. */
export function encodeEbpf(insns: readonly EbpfInsn[]): Uint8Array {
  const out = new Uint8Array(insns.length * 8);
  const dv = new DataView(out.buffer);
  insns.forEach((x, i) => {
    dv.setUint8(i * 8, x.code);
    dv.setUint8(i * 8 + 1, (x.dst & 0xf) | ((x.src & 0xf) << 4));
    dv.setInt16(i * 8 + 2, x.off, true);
    dv.setInt32(i * 8 + 4, x.imm, true);
  });
  return out;
}

/** Decode 8-byte eBPF instructions (little-endian, as EM_BPF objects on x86 store them). */
export function decodeEbpf(bytes: Uint8Array): EbpfInsn[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: EbpfInsn[] = [];
  for (let o = 0; o + 8 <= bytes.byteLength; o += 8) {
    const regs = dv.getUint8(o + 1);
    out.push({
      code: dv.getUint8(o),
      dst: regs & 0xf,
      src: regs >> 4,
      off: dv.getInt16(o + 2, true),
      imm: dv.getInt32(o + 4, true),
    });
  }
  return out;
}
