/**
 * The module loader's one error type, and how an error from a layer below becomes one.
 *
 * Why each error is labelled where it arises: a caller (the dataset runner, the CLI, the fuzz
 * target) must be able to tell a malformed file from a missing symbol from an allocator that ran
 * out, and the errno must be the one Linux's load_module() returns for that cause. Guessing from
 * the exception class after the fact got it wrong (any plain Error used to be reported as
 * "ENOMEM allocator refused", issue 16 item 3). So the loader runs each step inside `inPhase`,
 * which knows which step it is:
 *
 *   source       errno    Linux (6.1)
 *   elf          ENOEXEC  elf_validity_check(), setup_load_info(): malformed file
 *   layout       ENOEXEC  module_enforce_rwx_sections()
 *   symbols      ENOENT   resolve_symbol_wait() "Unknown symbol" (EINVAL: namespace not imported,
 *                         CRC mismatch; ENOEXEC: SHN_COMMON, livepatch symbols)
 *   relocation   ENOEXEC  apply_relocate_add(): unknown type, overflow, nonzero target
 *   exports      ENOEXEC  verify_exported_symbols(), a corrupt __ksymtab
 *   percpu       ENOMEM   percpu_modalloc()
 *   allocator    ENOMEM   module_memory_alloc() / set_memory_*() failed: only when the
 *                         allocator itself threw a typed error (its own code, e.g. ENOSPC, is
 *                         kept in `allocatorCode` and in the message)
 *   state        EEXIST / ENOENT / EBUSY / EINVAL: already loaded, not loaded, in use
 *
 * A relocation overflow keeps Linux's -ENOEXEC (__write_relocate_add(): "overflow in relocation
 * type ..."; return -ENOEXEC); `relocKind` says it was an overflow.
 *
 * Anything else — a TypeError, an AssertionError, an Error without a code — is a bug in this
 * code or the allocator and is rethrown as itself, never dressed up as a load failure.
 */
import { ElfError } from './elf.js';
import { ModuleFormatError } from './layout.js';
import { PercpuError } from './percpu.js';
import { RelocError } from './reloc.js';

export type ModuleLoadErrorCode = 'ENOEXEC' | 'ENOENT' | 'EEXIST' | 'ENOMEM' | 'EINVAL' | 'EBUSY';

export type ModuleLoadErrorSource =
  | 'elf'
  | 'layout'
  | 'symbols'
  | 'relocation'
  | 'exports'
  | 'percpu'
  | 'allocator'
  | 'state';

export class ModuleLoadError extends Error {
  override name = 'ModuleLoadError';
  constructor(
    readonly code: ModuleLoadErrorCode,
    readonly moduleName: string,
    message: string,
    /** Symbols that could not be resolved (for ENOENT). */
    readonly unresolved: readonly string[] = [],
    /** For relocation failures: the kind (overflow, unknown-type, ...). */
    readonly relocKind: string | null = null,
    /** Which step of the load failed (table above). */
    readonly source: ModuleLoadErrorSource = 'state',
    /** For allocator failures: the allocator's own error code (ENOMEM, ENOSPC, E2BIG...). */
    readonly allocatorCode: string | null = null,
  ) {
    super(`${code}: ${message}`);
  }
}

/** A typed error of an allocator, machine or host layer: an Error with a string `code`. */
function typedCode(e: unknown): string | null {
  if (!(e instanceof Error) || e.name === 'AssertionError' || e instanceof TypeError) return null;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && code !== '' ? code : null;
}

/** `e` as a ModuleLoadError of `source`, or `e` itself rethrown when it is a bug. */
export function labelError(e: unknown, source: ModuleLoadErrorSource, name: string): ModuleLoadError {
  if (e instanceof ModuleLoadError) return e;
  if (e instanceof ElfError)
    return new ModuleLoadError('ENOEXEC', name, `${name}: ${e.message}`, [], null, source);
  // Its messages already name the module, as Linux's do ("Module %s: section %s is ...").
  if (e instanceof ModuleFormatError)
    return new ModuleLoadError('ENOEXEC', name, e.message, [], null, source);
  if (e instanceof RelocError) {
    const text = e.message.replace(/^ENOEXEC: /, '');
    return new ModuleLoadError('ENOEXEC', name, `${name}: ${text}`, [], e.kind, source);
  }
  if (e instanceof PercpuError) return new ModuleLoadError('ENOMEM', name, e.message, [], null, 'percpu');
  if (source === 'allocator') {
    const code = typedCode(e);
    if (code !== null) {
      return new ModuleLoadError(
        'ENOMEM',
        name,
        `${name}: the allocator refused (${code}): ${(e as Error).message}`,
        [],
        null,
        'allocator',
        code,
      );
    }
  }
  throw e;
}

/** Run one step of a load; whatever it throws leaves labelled with that step (or as a bug). */
export function inPhase<T>(source: ModuleLoadErrorSource, name: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw labelError(e, source, name);
  }
}
