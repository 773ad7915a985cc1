/**
 * The ftrace consumer's one error type.
 *
 * Why typed and checked before anything changes: an attach that Linux refuses (a filter that
 * matches no function, a module that is not loaded, a call site whose bytes are not what ftrace
 * expects) must be a value a caller can switch on, and must leave allocator, machine and the
 * ftrace records exactly as they were. Linux's own order differs in one place, said where it
 * matters: register_ftrace_function() creates the ops' trampoline (__register_ftrace_function ->
 * arch_ftrace_update_trampoline) before ftrace_replace_code() reads the sites, and a bad site
 * there is an ftrace_bug() that disables ftrace for good; here every site is read first
 * (ftrace_replace_code()'s own first loop, ftrace_verify_code()) and a bad one refuses the attach
 * before the trampoline is allocated.
 *
 *   code       Linux (6.1)
 *   ENOENT     the module is not loaded / the ops is not registered (unregister: -ENODEV)
 *   ENOMATCH   ftrace_set_hash(): no record matches the filter (-EINVAL)
 *   EBADSITE   ftrace_verify_code(): the 5 bytes at a site are not the expected ones (-EINVAL)
 *   ENODEV     ftrace_disabled: an earlier ftrace_bug() (a call site at module load that was not
 *              `call __fentry__`) turned ftrace off
 *   ENOEXEC    the module's __mcount_loc cannot be read (not RELA R_X86_64_64 entries inside text)
 *   EBUSY      the function already has a direct call (register_ftrace_direct_multi: -EBUSY), or a
 *              module with attached sites is unloaded (a BPF trampoline holds a module reference,
 *              bpf_trampoline_module_get)
 *   EINVAL     a bad argument (an empty name, a bad glob, a non-x86 machine, a double detach)
 */
export type FtraceErrorCode = 'ENOENT' | 'ENOMATCH' | 'EBADSITE' | 'ENODEV' | 'ENOEXEC' | 'EBUSY' | 'EINVAL';

export class FtraceError extends Error {
  override name = 'FtraceError';
  constructor(
    readonly code: FtraceErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
