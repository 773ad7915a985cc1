/**
 * eBPF object files in: the programs of a clang-built BPF ELF object (EM_BPF, ET_REL), with the
 * subprograms each one calls, ready for the JIT the way the kernel JITs them.
 *
 * Why this shape: libbpf loads each program (a global function in a non-.text section) with the
 * .text subprograms it calls appended (bpf_object__relocate_calls()), and the kernel's verifier
 * then splits them again (check_subprogs()) and jit_subprogs() gives every function its own
 * image: one bpf_jit_binary_pack_alloc() per function. So a program here is a list of functions,
 * each with its own instructions; calls between them are BPF_PSEUDO_CALL and become 5-byte rel32
 * calls; a 64-bit load with a map or global-data relocation becomes the kernel address of the map
 * (or its value), which is not a 32-bit unsigned value, so the JIT's movabs (10 bytes).
 *
 * What the verifier would change before the JIT and this does not model (said, not hidden):
 * dead code removal (e.g. the XDP dispatcher's branches past conf.num_progs_enabled, which is
 * read-only data), helper inlining and map-op rewrites (do_misc_fixups(): array map lookups
 * become inline code), ctx field rewrites (size-neutral loads), and the div/mod-by-zero guards it
 * adds. Stack depth is only zero or non-zero to the JIT ('sub rsp, imm32'); non-zero here means
 * the function touches r10.
 *
 * Malformed input is a typed BpfError: ENOTELF (not ELF, not 64-bit little-endian EM_BPF
 * relocatable), EELF (sections, symbols or relocations out of bounds or inconsistent).
 */
import { BpfError } from './errors.js';
import {
  BPF_CALL,
  BPF_DW,
  BPF_IMM,
  BPF_JMP,
  BPF_LD,
  BPF_PSEUDO_CALL,
  BPF_REG_FP,
  decodeEbpf,
  type EbpfInsn,
} from './insn.js';
import type { JitProgram } from './jit-x86.js';

const EM_BPF = 247;
const ET_REL = 1;
const SHT_SYMTAB = 2;
const SHT_REL = 9;
const SHF_EXECINSTR = 0x4;
const STT_FUNC = 2;
const STB_GLOBAL = 1;
/** A stand-in kernel address for a map or map value (direct map, 0xffff888...). */
const KERNEL_DATA_HI = 0xffff8881;
const KERNEL_DATA_LO = 0x23456000;

interface Section {
  readonly name: string;
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly size: number;
  readonly link: number;
  readonly info: number;
}

interface Sym {
  readonly name: string;
  readonly value: number;
  readonly size: number;
  readonly type: number;
  readonly bind: number;
  readonly shndx: number;
}

export interface BpfFunction {
  readonly name: string;
  readonly section: string;
  readonly insns: readonly EbpfInsn[];
  readonly stackDepthBytes: number;
}

export interface BpfObjectProgram {
  readonly name: string;
  readonly section: string;
  /** functions[0] is the program itself, then its subprograms in call order. */
  readonly functions: readonly BpfFunction[];
}

function cstr(b: Uint8Array, at: number): string {
  let end = at;
  while (end < b.length && b[end] !== 0) end++;
  return new TextDecoder().decode(b.subarray(at, end));
}

/** Read the programs of an eBPF object file. */
export function readBpfObject(bytes: Uint8Array): BpfObjectProgram[] {
  if (!(bytes instanceof Uint8Array) || bytes.length < 64)
    throw new BpfError('ENOTELF', 'too short to be an ELF file');
  if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46)
    throw new BpfError('ENOTELF', 'no ELF magic');
  if (bytes[4] !== 2 || bytes[5] !== 1) throw new BpfError('ENOTELF', 'not a 64-bit little-endian ELF file');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint16(16, true) !== ET_REL || dv.getUint16(18, true) !== EM_BPF) {
    throw new BpfError('ENOTELF', 'not a relocatable EM_BPF object');
  }
  const shoff = Number(dv.getBigUint64(40, true));
  const shentsize = dv.getUint16(58, true);
  const shnum = dv.getUint16(60, true);
  const shstrndx = dv.getUint16(62, true);
  if (shentsize !== 64 || shnum === 0 || shoff + shnum * 64 > bytes.length || shstrndx >= shnum) {
    throw new BpfError('EELF', 'section header table out of bounds');
  }
  const raw = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * 64;
    return {
      nameOff: dv.getUint32(o, true),
      type: dv.getUint32(o + 4, true),
      flags: Number(dv.getBigUint64(o + 8, true)),
      offset: Number(dv.getBigUint64(o + 24, true)),
      size: Number(dv.getBigUint64(o + 32, true)),
      link: dv.getUint32(o + 40, true),
      info: dv.getUint32(o + 44, true),
    };
  });
  for (const s of raw) {
    if (s.type !== 8 && (s.offset > bytes.length || s.offset + s.size > bytes.length)) {
      throw new BpfError('EELF', 'section data out of bounds');
    }
  }
  const shstr = raw[shstrndx];
  const sections: Section[] = raw.map((s) => ({
    ...s,
    name: cstr(bytes.subarray(shstr.offset, shstr.offset + shstr.size), s.nameOff),
  }));
  const symtabIdx = sections.findIndex((s) => s.type === SHT_SYMTAB);
  if (symtabIdx < 0) throw new BpfError('EELF', 'no symbol table');
  const symtab = sections[symtabIdx];
  if (symtab.link >= sections.length || symtab.size % 24 !== 0)
    throw new BpfError('EELF', 'bad symbol table');
  const strtab = sections[symtab.link];
  const strBytes = bytes.subarray(strtab.offset, strtab.offset + strtab.size);
  const syms: Sym[] = [];
  for (let o = symtab.offset; o < symtab.offset + symtab.size; o += 24) {
    const info = dv.getUint8(o + 4);
    syms.push({
      name: cstr(strBytes, dv.getUint32(o, true)),
      value: Number(dv.getBigUint64(o + 8, true)),
      size: Number(dv.getBigUint64(o + 16, true)),
      type: info & 0xf,
      bind: info >> 4,
      shndx: dv.getUint16(o + 6, true),
    });
  }
  // Instructions of every executable section, with relocations applied.
  const code = new Map<number, EbpfInsn[]>();
  sections.forEach((s, i) => {
    if (s.flags & SHF_EXECINSTR && s.size > 0) {
      if (s.size % 8 !== 0) throw new BpfError('EELF', `section ${s.name} is not whole instructions`);
      code.set(i, decodeEbpf(bytes.subarray(s.offset, s.offset + s.size)));
    }
  });
  // Call relocations: (section, insn index) -> (target section, target insn index).
  const callTargets = new Map<string, [number, number]>();
  for (const rel of sections) {
    if (rel.type !== SHT_REL || !code.has(rel.info)) continue;
    if (rel.size % 16 !== 0) throw new BpfError('EELF', `bad relocation section ${rel.name}`);
    const insns = code.get(rel.info)!;
    for (let o = rel.offset; o < rel.offset + rel.size; o += 16) {
      const at = Number(dv.getBigUint64(o, true));
      const info = dv.getBigUint64(o + 8, true);
      const symIdx = Number(info >> 32n);
      const idx = at / 8;
      if (!Number.isInteger(idx) || idx >= insns.length || symIdx >= syms.length)
        throw new BpfError('EELF', `relocation out of range in ${rel.name}`);
      const insn = insns[idx];
      const sym = syms[symIdx];
      if (insn.code === (BPF_JMP | BPF_CALL) && insn.src === BPF_PSEUDO_CALL) {
        // libbpf: sub_insn_idx = sym->st_value / BPF_INSN_SZ + insn->imm + 1
        callTargets.set(`${rel.info}:${idx}`, [sym.shndx, sym.value / 8 + insn.imm + 1]);
      } else if (insn.code === (BPF_LD | BPF_IMM | BPF_DW)) {
        if (idx + 1 >= insns.length)
          throw new BpfError('EELF', 'ld_imm64 relocation on the last instruction');
        insns[idx] = { ...insn, imm: KERNEL_DATA_LO | 0 };
        insns[idx + 1] = { ...insns[idx + 1], imm: KERNEL_DATA_HI | 0 };
      }
    }
  }
  // Functions: FUNC symbols in executable sections; a section without one is one function.
  const funcs = syms.filter((s) => s.type === STT_FUNC && code.has(s.shndx));
  const funcAt = (shndx: number, index: number): Sym | undefined =>
    funcs.find((f) => f.shndx === shndx && f.value / 8 === index);
  const body = (f: Sym): BpfFunction => {
    const all = code.get(f.shndx)!;
    const start = f.value / 8;
    const end = f.size > 0 ? start + f.size / 8 : all.length;
    if (!Number.isInteger(start) || end > all.length || start >= end)
      throw new BpfError('EELF', `function ${f.name} out of its section`);
    const insns = all.slice(start, end);
    let depth = 0;
    for (const x of insns) {
      if (x.dst === BPF_REG_FP || x.src === BPF_REG_FP) depth = Math.max(depth, x.off < 0 ? -x.off : 8);
    }
    return { name: f.name, section: sections[f.shndx].name, insns, stackDepthBytes: depth };
  };
  const programs: BpfObjectProgram[] = [];
  for (const f of funcs) {
    if (f.bind !== STB_GLOBAL || sections[f.shndx].name === '.text') continue;
    const order: Sym[] = [f];
    for (let k = 0; k < order.length; k++) {
      const g = order[k];
      const start = g.value / 8;
      body(g).insns.forEach((x, j) => {
        if (x.code !== (BPF_JMP | BPF_CALL) || x.src !== BPF_PSEUDO_CALL) return;
        const t = callTargets.get(`${g.shndx}:${start + j}`) ?? [g.shndx, start + j + x.imm + 1];
        const callee = funcAt(t[0], t[1]);
        if (callee === undefined) throw new BpfError('EELF', `call from ${g.name} to no function`);
        if (!order.includes(callee)) order.push(callee);
      });
    }
    programs.push({ name: f.name, section: sections[f.shndx].name, functions: order.map(body) });
  }
  return programs;
}

/** The JIT's view of one function (jit_subprogs(): func_idx != 0 for subprograms). */
export function functionForJit(fn: BpfFunction, index: number): JitProgram {
  return { insns: fn.insns, stackDepthBytes: fn.stackDepthBytes, wasClassic: false, isSubprog: index > 0 };
}
