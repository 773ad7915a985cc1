/**
 * x86-64 ftrace facts: the call-site encodings, the trampoline size create_trampoline() asks for,
 * where the core kernel's ftrace entry points sit, and the text_poke_bp batch limit.
 *
 * Why constants with their sources here: the ftrace consumer must make the requests Linux makes,
 * and each number below is either the kernel's own definition (cited) or measured from the Debian
 * kernel whose modules the project loads (linux-image-6.1.0-57-cloud-amd64, 6.1.192-3; its
 * vmlinux is taken out of the vmlinuz by src/workloads/dataset/kernel-image.ts). The template
 * sizes are kernel-build facts (they depend on the .config: CONFIG_DYNAMIC_FTRACE_WITH_ARGS,
 * CONFIG_RETHUNK, CONFIG_RETPOLINE, CONFIG_SLS are all set there), so they are read off that build,
 * not guessed: `objdump -d --start-address=<__fentry__>` of the vmlinux shows __fentry__ (a bare
 * RET), then ftrace_caller at +0x10 and ftrace_regs_caller at +0xe0; the inner labels of
 * arch/x86/kernel/ftrace_64.S (Linux 6.1) are found by their instructions: the op pointer load is
 * `48 8b 15 disp32` (movq function_trace_op(%rip), %rdx), ftrace_call / ftrace_regs_call the
 * `call ftrace_stub`, ftrace_regs_caller_jmp the 2-byte `jnz 1f` (75 35), and the *_end labels
 * the RET (jmp __x86_return_thunk, e9) right after restore_mcount_regs (and popfq). In that build
 * __fentry__ is at 0xffffffff8106b730 (exported), ftrace_stub at ...b710, ftrace_caller at ...b740
 * (op ptr ...b7a7, ftrace_call ...b7be, end ...b802), ftrace_regs_caller at ...b810 (op ptr
 * ...b868, ftrace_regs_call ...b8d3, jmp ...b925, end ...b957). Offsets are kept relative to
 * __fentry__, so they follow the machine's KASLR through the export table.
 */
import { assert } from '../../base/assert.js';

/** MCOUNT_INSN_SIZE (arch/x86/include/asm/ftrace.h): a `call __fentry__` is 5 bytes. */
export const MCOUNT_INSN_BYTES = 5;
/** CALL_INSN_OPCODE, INT3_INSN_OPCODE, JMP32_INSN_OPCODE (arch/x86/include/asm/text-patching.h). */
export const CALL_OPCODE = 0xe8;
export const INT3_OPCODE = 0xcc;
export const JMP32_OPCODE = 0xe9;

/**
 * x86_nops[5] = BYTES_NOP5 for 64-bit (arch/x86/include/asm/nops.h since "x86/nops: Remove
 * dynamic NOP selection", 5.15): `nopl 0x0(%rax,%rax,1)`. ftrace_nop_replace() returns it, and
 * ftrace_make_nop() writes it over every `call __fentry__` when a module is loaded.
 */
export const X86_NOP5: Readonly<Uint8Array> = Uint8Array.of(0x0f, 0x1f, 0x44, 0x00, 0x00);
/** x86_nops[2] (BYTES_NOP2 = 66 90): create_trampoline() writes it over ftrace_regs_caller_jmp's jnz. */
export const X86_NOP2: Readonly<Uint8Array> = Uint8Array.of(0x66, 0x90);

/**
 * TP_VEC_MAX (arch/x86/kernel/alternative.c) = PAGE_SIZE / sizeof(struct text_poke_loc): the
 * struct is 16 bytes since "x86/alternatives: Shrink text_poke_loc" (Peter Zijlstra, 2019:
 * "shrinks struct text_poke_loc to 16 bytes, and consequently increases TP_VEC_MAX from 170 to
 * 256"); 6.1's {s32 rel_addr; s32 rel32; u8 opcode; u8 text[5]; u8 old;} still is. text_poke_queue()
 * flushes the vector when it is full or when the next address is below the last one
 * (tp_order_fail: the int3 handler bsearches the vector, so a batch is sorted).
 */
export const TP_VEC_MAX = 256;

/**
 * RET_SIZE in create_trampoline() (Linux 6.1, after "x86/ftrace: Use alternative RET encoding",
 * 1f001e9da6bb, 5.19): IS_ENABLED(CONFIG_RETPOLINE) ? 5 : 1 + IS_ENABLED(CONFIG_SLS). Debian's
 * 6.1 config has CONFIG_RETPOLINE=y, so the trampoline ends in a 5-byte `jmp __x86_return_thunk`.
 */
export const RET_SIZE_BYTES = 5;
/** The ftrace_ops pointer stored after the return (sizeof(void *)). */
export const OPS_POINTER_BYTES = 8;
/** OP_REF_SIZE: `movq function_trace_op(%rip), %rdx` = 48 8b 15 disp32. */
export const OP_REF_BYTES = 7;
export const OP_REF_PREFIX: Readonly<Uint8Array> = Uint8Array.of(0x48, 0x8b, 0x15);

/** One template of arch/x86/kernel/ftrace_64.S, offsets from its start (measured, see header). */
export interface FtraceTemplate {
  /** ftrace_caller or ftrace_regs_caller. */
  readonly name: string;
  /** Its start, relative to __fentry__ (an export, so a module loader knows it). */
  readonly fromFentryBytes: number;
  /** *_end - start: what create_trampoline() copies. */
  readonly sizeBytes: number;
  /** *_op_ptr - start: the op reference create_trampoline() redirects to the stored ops pointer. */
  readonly opPtrOffset: number;
  /** ftrace_call / ftrace_regs_call - start: the call create_trampoline() points at the callback. */
  readonly callOffset: number;
  /** ftrace_regs_caller_jmp - start (its jnz becomes a NOP2), or null for ftrace_caller. */
  readonly jmpOffset: number | null;
}

/** ftrace_caller: ops without FTRACE_OPS_FL_SAVE_REGS (the function and function_graph tracers). */
export const FTRACE_CALLER: FtraceTemplate = {
  name: 'ftrace_caller',
  fromFentryBytes: 0x10,
  sizeBytes: 0xc2,
  opPtrOffset: 0x67,
  callOffset: 0x7e,
  jmpOffset: null,
};

/** ftrace_regs_caller: ops with FTRACE_OPS_FL_SAVE_REGS (kprobes on ftrace, direct calls, livepatch). */
export const FTRACE_REGS_CALLER: FtraceTemplate = {
  name: 'ftrace_regs_caller',
  fromFentryBytes: 0xe0,
  sizeBytes: 0x147,
  opPtrOffset: 0x58,
  callOffset: 0xc3,
  jmpOffset: 0x115,
};

/** ftrace_stub, the template's own call target (-0x20 from __fentry__ in that build). */
export const FTRACE_STUB_FROM_FENTRY_BYTES = -0x20;

/**
 * create_trampoline() (arch/x86/kernel/ftrace.c, Linux 6.1): alloc_tramp(size + RET_SIZE +
 * sizeof(void *)) where size = *_end - start of the template: 194 + 5 + 8 = 207 bytes for
 * ftrace_caller, 327 + 5 + 8 = 340 for ftrace_regs_caller.
 */
export function trampolineBytes(saveRegs: boolean): number {
  const t = saveRegs ? FTRACE_REGS_CALLER : FTRACE_CALLER;
  return t.sizeBytes + RET_SIZE_BYTES + OPS_POINTER_BYTES;
}

/**
 * The length of the BPF trampoline image x86 arch_prepare_bpf_trampoline() (Linux 6.1,
 * arch/x86/net/bpf_jit_comp.c) emits for ONE fentry program on a function of `nrArgs` register
 * arguments (bpf_trampoline_update: no fexit/fmod_ret, so flags = BPF_TRAMP_F_RESTORE_REGS),
 * counted instruction by instruction for Debian's config (no CONFIG_X86_KERNEL_IBT, so no
 * ENDBR; CONFIG_RETHUNK, so the return is `jmp __x86_return_thunk`; all stack offsets disp8):
 *   push rbp; mov rbp,rsp; sub rsp,imm8; push rbx              1 + 3 + 4 + 1 = 9
 *   mov eax,nr_args; mov [rbp-args_off],rax                    5 + 4 = 9
 *   save_regs: one mov [rbp-off],reg per argument              4 each
 *   invoke_bpf_prog: xor edi,edi (cookie 0); mov [rbp-x],rdi;  2 + 4
 *     movabs rdi,prog; lea rsi,[rbp-run_ctx]; call enter;      10 + 4 + 5
 *     mov rbx,rax; test rax,rax; je (2); lea rdi,[rbp-regs];    3 + 3 + 2 + 4
 *     call bpf_func; movabs rdi,prog; mov rsi,rbx;              5 + 10 + 3
 *     lea rdx,[rbp-run_ctx]; call exit                          4 + 5 = 64
 *   restore_regs: one mov reg,[rbp-off] per argument           4 each
 *   pop rbx; leave; jmp __x86_return_thunk                      1 + 1 + 5 = 7
 * = 89 + 8 x nrArgs. Linux 6.1 still allocates a whole page per image (bpf_tramp_image_alloc);
 * 6.8+ asks arch_alloc_bpf_trampoline() for exactly this length (arch_bpf_trampoline_size).
 */
export function bpfFentryTrampolineBytes(nrArgs: number): number {
  assert(
    Number.isInteger(nrArgs) && nrArgs >= 0 && nrArgs <= 6,
    `x86 trampolines take 0..6 register arguments, not ${nrArgs}`,
  );
  return 9 + 9 + 4 * nrArgs + 64 + 4 * nrArgs + 7;
}

/** The bytes of `opcode rel32` at `ip` reaching `target` (text_gen_insn); addresses are signed. */
export function rel32Insn(opcode: number, ipSigned: number, targetSigned: number): Uint8Array {
  const rel = targetSigned - (ipSigned + 5);
  assert(rel >= -(2 ** 31) && rel < 2 ** 31, `rel32 out of reach: ${rel}`);
  const out = new Uint8Array(5);
  out[0] = opcode;
  new DataView(out.buffer).setInt32(1, rel, true);
  return out;
}

/** ftrace_call_replace(ip, addr): `call addr` at ip. */
export function callInsn(ipSigned: number, targetSigned: number): Uint8Array {
  return rel32Insn(CALL_OPCODE, ipSigned, targetSigned);
}

/** The target of a `call rel32` at ip, or null when the bytes are not a call. */
export function callTargetOf(ipSigned: number, bytes: Uint8Array): number | null {
  if (bytes.length < 5 || bytes[0] !== CALL_OPCODE) return null;
  const rel = new DataView(bytes.buffer, bytes.byteOffset, 5).getInt32(1, true);
  return ipSigned + 5 + rel;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The trampoline image create_trampoline() builds, at `trampolineSigned`: the template copied
 * (here a stand-in of NOPs: the template's instructions are the kernel's code and are not copied
 * into this project), then its patched fields at their real offsets: the op reference made
 * RIP-relative to the stored ops pointer, the call to the callback, (regs) the jnz made a NOP2,
 * the return (`jmp __x86_return_thunk` with X86_FEATURE_RETHUNK) and the ops pointer itself.
 */
export function trampolineImage(
  saveRegs: boolean,
  trampolineSigned: number,
  callbackSigned: number,
  returnThunkSigned: number,
  opsPointer: bigint,
): Uint8Array {
  const t = saveRegs ? FTRACE_REGS_CALLER : FTRACE_CALLER;
  const img = new Uint8Array(trampolineBytes(saveRegs)).fill(0x90);
  const view = new DataView(img.buffer);
  const ptrOffset = t.sizeBytes + RET_SIZE_BYTES;
  img.set(OP_REF_PREFIX, t.opPtrOffset);
  view.setInt32(t.opPtrOffset + 3, ptrOffset - (t.opPtrOffset + OP_REF_BYTES), true);
  img.set(callInsn(trampolineSigned + t.callOffset, callbackSigned), t.callOffset);
  if (t.jmpOffset !== null) img.set(X86_NOP2, t.jmpOffset);
  img.set(rel32Insn(JMP32_OPCODE, trampolineSigned + t.sizeBytes, returnThunkSigned), t.sizeBytes);
  view.setBigUint64(ptrOffset, opsPointer, true);
  return img;
}
