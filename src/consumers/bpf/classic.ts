/**
 * Classic BPF programs in: parsing (tcpdump -ddd text, raw struct sock_filter bytes) and the
 * kernel's acceptance checks, before anything is converted or allocated.
 *
 * Why the kernel's checks, in the kernel's order: a classic program reaches the JIT only through
 * bpf_prepare_filter() (net/core/filter.c, Linux 6.1): bpf_check_classic() (every opcode allowed
 * by chk_code_allowed(), divisions by a constant zero, shifts >= 32, scratch cells >= BPF_MEMWORDS,
 * jumps inside the program, known ancillary offsets, a RET last, then check_load_and_stores():
 * no scratch cell read before every path wrote it), then the caller's transformation (seccomp:
 * seccomp_check_filter(), kernel/seccomp.c). What they reject is rejected here with a typed
 * BpfError; the program a caller gets back is exactly what bpf_convert_filter() will see.
 *
 * The text format is `tcpdump -ddd EXPR`'s ("Dump packet-matching code as decimal numbers
 * (preceded with a count)", tcpdump(8)): a first line with the instruction count, then one line
 * per instruction, `code jt jf k` in decimal. It is checked strictly: the count must match.
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
  BPF_K,
  BPF_LD,
  BPF_LDX,
  BPF_LEN,
  BPF_LSH,
  BPF_MAXINSNS,
  BPF_MEM,
  BPF_MEMWORDS,
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

/** Bytes of one struct sock_filter. */
export const SOCK_FILTER_BYTES = 8;
/** sizeof(struct seccomp_data): int nr, u32 arch, u64 instruction_pointer, u64 args[6]. */
export const SECCOMP_DATA_BYTES = 64;

/** Parse `tcpdump -ddd` output (see the header). */
export function parseClassicText(text: string): ClassicInsn[] {
  if (typeof text !== 'string') throw new BpfError('EFORMAT', 'classic program text must be a string');
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (lines.length === 0) throw new BpfError('EFORMAT', 'empty classic program text');
  if (!/^\d+$/.test(lines[0]))
    throw new BpfError('EFORMAT', `first line must be the count, got '${lines[0]}'`);
  const count = Number(lines[0]);
  if (count !== lines.length - 1) {
    throw new BpfError('EFORMAT', `count line says ${count} instructions, ${lines.length - 1} follow`);
  }
  return lines.slice(1).map((line, i) => {
    const f = line.split(/\s+/);
    if (f.length !== 4 || !f.every((x) => /^\d+$/.test(x))) {
      throw new BpfError('EFORMAT', `expected 'code jt jf k' in decimal, got '${line}'`, i);
    }
    const [code, jt, jf, k] = f.map(Number);
    if (code > 0xffff || jt > 0xff || jf > 0xff || k > 0xffffffff) {
      throw new BpfError('EFORMAT', `field out of range in '${line}'`, i);
    }
    return { code, jt, jf, k };
  });
}

/** Decode raw struct sock_filter bytes (host order: little-endian on x86-64). */
export function decodeClassic(bytes: Uint8Array): ClassicInsn[] {
  if (!(bytes instanceof Uint8Array))
    throw new BpfError('EFORMAT', 'classic program bytes must be a Uint8Array');
  if (bytes.byteLength % SOCK_FILTER_BYTES !== 0) {
    throw new BpfError('EFORMAT', `${bytes.byteLength} bytes is not a whole number of sock_filter`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ClassicInsn[] = [];
  for (let o = 0; o < bytes.byteLength; o += SOCK_FILTER_BYTES) {
    out.push({
      code: dv.getUint16(o, true),
      jt: dv.getUint8(o + 2),
      jf: dv.getUint8(o + 3),
      k: dv.getUint32(o + 4, true),
    });
  }
  return out;
}

/** The `tcpdump -ddd` text of a program (the inverse of parseClassicText). */
export function classicToText(prog: readonly ClassicInsn[]): string {
  return `${prog.length}\n${prog.map((x) => `${x.code} ${x.jt} ${x.jf} ${x.k}`).join('\n')}\n`;
}

/** The opcodes chk_code_allowed() accepts (net/core/filter.c). */
const ALLOWED_CODES: ReadonlySet<number> = new Set([
  ...[BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_MOD, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH].flatMap(
    (op) => [BPF_ALU | op | BPF_K, BPF_ALU | op | BPF_X],
  ),
  BPF_ALU | BPF_NEG,
  BPF_LD | BPF_W | BPF_ABS,
  BPF_LD | BPF_H | BPF_ABS,
  BPF_LD | BPF_B | BPF_ABS,
  BPF_LD | BPF_W | BPF_LEN,
  BPF_LD | BPF_W | BPF_IND,
  BPF_LD | BPF_H | BPF_IND,
  BPF_LD | BPF_B | BPF_IND,
  BPF_LD | BPF_IMM,
  BPF_LD | BPF_MEM,
  BPF_LDX | BPF_W | BPF_LEN,
  BPF_LDX | BPF_B | BPF_MSH,
  BPF_LDX | BPF_IMM,
  BPF_LDX | BPF_MEM,
  BPF_ST,
  BPF_STX,
  BPF_MISC | BPF_TAX,
  BPF_MISC | BPF_TXA,
  BPF_RET | BPF_K,
  BPF_RET | BPF_A,
  BPF_JMP | BPF_JA,
  ...[BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET].flatMap((op) => [BPF_JMP | op | BPF_K, BPF_JMP | op | BPF_X]),
]);

/** The ancillary offsets bpf_anc_helper() knows (include/linux/filter.h). */
const ANCILLARY: ReadonlySet<number> = new Set(
  [
    SKF_AD_PROTOCOL,
    SKF_AD_PKTTYPE,
    SKF_AD_IFINDEX,
    SKF_AD_NLATTR,
    SKF_AD_NLATTR_NEST,
    SKF_AD_MARK,
    SKF_AD_QUEUE,
    SKF_AD_HATYPE,
    SKF_AD_RXHASH,
    SKF_AD_CPU,
    SKF_AD_ALU_XOR_X,
    SKF_AD_VLAN_TAG,
    SKF_AD_VLAN_TAG_PRESENT,
    SKF_AD_PAY_OFFSET,
    SKF_AD_RANDOM,
    SKF_AD_VLAN_TPID,
  ].map((a) => (SKF_AD_OFF + a) >>> 0),
);

const isCondJump = (code: number): boolean =>
  (code & 0x07) === BPF_JMP && code !== (BPF_JMP | BPF_JA) && ALLOWED_CODES.has(code);

/**
 * bpf_check_basics_ok() + bpf_check_classic() + check_load_and_stores() (net/core/filter.c).
 * Throws the typed error for the first rule broken; returns nothing.
 */
export function checkClassic(prog: readonly ClassicInsn[]): void {
  if (!Array.isArray(prog)) throw new BpfError('EFORMAT', 'classic program must be an array');
  const flen = prog.length;
  if (flen === 0 || flen > BPF_MAXINSNS) {
    throw new BpfError('EFORMAT', `program length ${flen} outside 1..${BPF_MAXINSNS} (bpf_check_basics_ok)`);
  }
  for (let pc = 0; pc < flen; pc++) {
    const f = prog[pc];
    if (
      f === null ||
      typeof f !== 'object' ||
      ![f.code, f.jt, f.jf, f.k].every((v) => Number.isInteger(v)) ||
      f.code < 0 ||
      f.code > 0xffff ||
      f.jt < 0 ||
      f.jt > 0xff ||
      f.jf < 0 ||
      f.jf > 0xff ||
      f.k < 0 ||
      f.k > 0xffffffff
    ) {
      throw new BpfError('EFORMAT', 'not a sock_filter (u16 code, u8 jt, u8 jf, u32 k)', pc);
    }
    if (!ALLOWED_CODES.has(f.code)) {
      throw new BpfError('EOPCODE', `opcode 0x${f.code.toString(16)} not allowed (chk_code_allowed)`, pc);
    }
    switch (f.code) {
      case BPF_ALU | BPF_DIV | BPF_K:
      case BPF_ALU | BPF_MOD | BPF_K:
        if (f.k === 0) throw new BpfError('EFORMAT', 'division by constant zero', pc);
        break;
      case BPF_ALU | BPF_LSH | BPF_K:
      case BPF_ALU | BPF_RSH | BPF_K:
        if (f.k >= 32) throw new BpfError('EFORMAT', `shift by ${f.k} >= 32`, pc);
        break;
      case BPF_LD | BPF_MEM:
      case BPF_LDX | BPF_MEM:
      case BPF_ST:
      case BPF_STX:
        if (f.k >= BPF_MEMWORDS) throw new BpfError('EFORMAT', `scratch cell ${f.k} >= ${BPF_MEMWORDS}`, pc);
        break;
      case BPF_JMP | BPF_JA:
        if (f.k >= flen - pc - 1) throw new BpfError('EJUMP', `ja +${f.k} leaves the program`, pc);
        break;
      case BPF_LD | BPF_W | BPF_ABS:
      case BPF_LD | BPF_H | BPF_ABS:
      case BPF_LD | BPF_B | BPF_ABS:
        // Offsets at or above SKF_AD_OFF (as u32) are ancillary; unknown ones are refused.
        if (f.k >= SKF_AD_OFF >>> 0 && !ANCILLARY.has(f.k)) {
          throw new BpfError('EFORMAT', `unknown ancillary load 0x${f.k.toString(16)}`, pc);
        }
        break;
      default:
        if (isCondJump(f.code) && (pc + f.jt + 1 >= flen || pc + f.jf + 1 >= flen)) {
          throw new BpfError('EJUMP', `jt ${f.jt} / jf ${f.jf} leave the program`, pc);
        }
    }
  }
  const last = prog[flen - 1].code;
  if (last !== (BPF_RET | BPF_K) && last !== (BPF_RET | BPF_A)) {
    throw new BpfError('EFORMAT', 'last instruction is not a RET', flen - 1);
  }
  checkLoadsAndStores(prog);
}

/** check_load_and_stores(): every path writes a scratch cell before reading it. */
function checkLoadsAndStores(prog: readonly ClassicInsn[]): void {
  const all = 0xffff;
  const masks = new Array<number>(prog.length).fill(all);
  let memvalid = 0;
  for (let pc = 0; pc < prog.length; pc++) {
    memvalid &= masks[pc];
    const f = prog[pc];
    switch (f.code) {
      case BPF_ST:
      case BPF_STX:
        memvalid |= 1 << f.k;
        break;
      case BPF_LD | BPF_MEM:
      case BPF_LDX | BPF_MEM:
        if (!(memvalid & (1 << f.k)))
          throw new BpfError('EMEM', `scratch cell ${f.k} read before written`, pc);
        break;
      case BPF_JMP | BPF_JA:
        masks[pc + 1 + f.k] &= memvalid;
        memvalid = all;
        break;
      default:
        if (isCondJump(f.code)) {
          masks[pc + 1 + f.jt] &= memvalid;
          masks[pc + 1 + f.jf] &= memvalid;
          memvalid = all;
        }
    }
  }
}

/**
 * seccomp_check_filter() (kernel/seccomp.c): only the allowed subset, 32-bit aligned loads inside
 * struct seccomp_data, and the two rewrites it makes (LD|W|ABS -> LDX|W|ABS, which
 * bpf_convert_filter() turns into a direct load from ctx; LEN -> IMM sizeof(seccomp_data)).
 * Runs after checkClassic, as bpf_prepare_filter() runs it; returns the rewritten copy.
 */
export function seccompCheckFilter(prog: readonly ClassicInsn[]): ClassicInsn[] {
  return prog.map((f, pc) => {
    switch (f.code) {
      case BPF_LD | BPF_W | BPF_ABS:
        if (f.k >= SECCOMP_DATA_BYTES || f.k & 3) {
          throw new BpfError('EFORMAT', `seccomp load at ${f.k} not aligned or outside seccomp_data`, pc);
        }
        return { ...f, code: BPF_LDX | BPF_W | BPF_ABS };
      case BPF_LD | BPF_W | BPF_LEN:
        return { ...f, code: BPF_LD | BPF_IMM, k: SECCOMP_DATA_BYTES };
      case BPF_LDX | BPF_W | BPF_LEN:
        return { ...f, code: BPF_LDX | BPF_IMM, k: SECCOMP_DATA_BYTES };
      default:
        if (!SECCOMP_ALLOWED.has(f.code)) {
          throw new BpfError('EOPCODE', `opcode 0x${f.code.toString(16)} not allowed in seccomp filters`, pc);
        }
        return f;
    }
  });
}

/** The opcodes seccomp_check_filter() lists explicitly (besides the rewritten loads). */
const SECCOMP_ALLOWED: ReadonlySet<number> = new Set([
  BPF_RET | BPF_K,
  BPF_RET | BPF_A,
  ...[BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH].flatMap((op) => [
    BPF_ALU | op | BPF_K,
    BPF_ALU | op | BPF_X,
  ]),
  BPF_ALU | BPF_NEG,
  BPF_LD | BPF_IMM,
  BPF_LDX | BPF_IMM,
  BPF_MISC | BPF_TAX,
  BPF_MISC | BPF_TXA,
  BPF_LD | BPF_MEM,
  BPF_LDX | BPF_MEM,
  BPF_ST,
  BPF_STX,
  BPF_JMP | BPF_JA,
  ...[BPF_JEQ, BPF_JGE, BPF_JGT, BPF_JSET].flatMap((op) => [BPF_JMP | op | BPF_K, BPF_JMP | op | BPF_X]),
]);
