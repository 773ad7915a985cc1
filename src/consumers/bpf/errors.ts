/**
 * The BPF consumer's one error type.
 *
 * Why typed, and raised before anything is allocated: a BPF load that Linux refuses (a classic
 * program bpf_check_classic() rejects, an opcode do_jit() does not know, a jump that leaves the
 * program, an object file that is not an eBPF ELF) must surface as a value a caller can switch
 * on, and must leave the allocator untouched. Linux checks and converts the whole program before
 * bpf_int_jit_compile() asks bpf_jit_binary_pack_alloc() for memory, and the JIT passes run
 * before the allocation too, so every refusal here happens before `alloc`. The one failure that
 * can only be seen after the image address is known (a call target out of rel32 reach, emit_patch()
 * -ERANGE) frees the image again, as bpf_int_jit_compile()'s out_image path does.
 *
 *   code      errno    Linux (6.1)
 *   EFORMAT   EINVAL   malformed input: bad length, bad text, bad ancillary offset, bad field
 *   EOPCODE   EINVAL   chk_code_allowed() / seccomp_check_filter() / do_jit() "unknown opcode"
 *   EJUMP     EINVAL   bpf_check_classic() jump out of range; BPF_EMIT_JMP offset overflow
 *   EMEM      EINVAL   check_load_and_stores(): scratch memory read before written
 *   ENOTELF   ENOEXEC  not an ELF file, or not a 64-bit little-endian eBPF (EM_BPF) object
 *   EELF      ENOEXEC  an ELF file whose sections, symbols or relocations are malformed
 *   ERANGE    ERANGE   emit_patch(): call target beyond rel32 reach of the image
 *   EJIT      EFAULT   the JIT did not converge (bpf_int_jit_compile() falls back to the interpreter)
 */
export type BpfErrorCode = 'EFORMAT' | 'EOPCODE' | 'EJUMP' | 'EMEM' | 'ENOTELF' | 'EELF' | 'ERANGE' | 'EJIT';

export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    readonly code: BpfErrorCode,
    message: string,
    /** The instruction index the error is about, or null. */
    readonly insnIndex: number | null = null,
  ) {
    super(insnIndex === null ? `${code}: ${message}` : `${code}: insn ${insnIndex}: ${message}`);
  }
}
