/**
 * Calling JIT code from JS: the checks that turn "this would kill the process" into a typed error.
 *
 * A call through koffi jumps to raw memory; if that memory is not executable the process dies with
 * SIGSEGV, and if it holds the allocator's trap fill (0xCC, int3: every byte of a text block that
 * is not a live allocation, so freed and never-allocated code) it dies with SIGTRAP. So both when
 * the function is made and before every call:
 * - the backend (and, for an attached one, the arena) must be open: BackendError ECLOSED;
 * - the entry page must be ROX in the shared page table: HostError EFAULT;
 * - the entry byte must not be the trap pattern: HostError EFAULT ("freed or never allocated").
 *   The rule this implies: a JIT function may not begin with int3 (no generator here emits one).
 * In mprotect mode the checks and the call run under the shared side of the arena lock, so no
 * flip can make the page non-executable in between (rwlock.ts). dualmap calls take no lock:
 * nothing there ever changes the protection of live code, and freeing code another thread is
 * still running is the caller's race, as with free() of any memory in use.
 *
 * Known hazard outside this code (koffi 3.3.4, measured here): a worker terminated while it is
 * inside koffi.decode or koffi.view aborts the whole process ("FATAL ERROR:
 * Error::ThrowAsJavaScriptException napi_throw": the addon throws into an isolate that is being
 * terminated); 2 of 120 random terminations of a churning worker did, all inside decode. Calls
 * through a decoded function or a bound libc function are safe to terminate. So Callables decodes
 * once per signature (the call stub, trampoline.ts) rather than once per address; what remains
 * exposed is a thread's first callable of each signature, signatures the stub cannot pass (decoded
 * per address, cached), and attaching (koffi.view).
 */
import koffi, { type TypeObject } from 'koffi';
import { BackendError } from '../execmem/backend.js';
import { codeProt, type FamilyArena, P_ROX } from './arena.js';
import { HostError } from './errors.js';
import type { ArenaLock } from './rwlock.js';
import { trampolineProto } from './trampoline.js';

/** A JIT function callable from JS. */
// biome-ignore lint/suspicious/noExplicitAny: koffi converts arguments per the C signature.
export type HostFunction = (...args: any[]) => any;

export interface CallSite {
  readonly va: number;
  readonly fam: FamilyArena;
  /** The unchecked koffi callable (made after the first check passed). */
  readonly raw: () => HostFunction;
  readonly trapByte: number;
  /** mprotect mode: the lock to hold shared around the call; null in dualmap. */
  readonly lock: ArenaLock | null;
  readonly isClosed: () => boolean;
  /** Tests: runs inside the shared hold (mprotect mode), right before the jump. */
  readonly onCall?: () => void;
}

function hex(va: number): string {
  return `0x${va.toString(16)}`;
}

/** Throws unless the code at the call site can be run now. */
export function checkCallable(site: CallSite, made: boolean): void {
  if (site.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
  const fam = site.fam;
  const page = fam.pageOf(site.va);
  const code = fam.viewCodes[page];
  if (code !== P_ROX) {
    const now = made ? 'no longer executable' : 'not executable';
    throw new HostError('EFAULT', `${hex(site.va)} is ${now} (page is ${codeProt(code) ?? 'free'})`);
  }
  if (fam.view[site.va - fam.layout.viewBase] === site.trapByte) {
    throw new HostError(
      'EFAULT',
      `${hex(site.va)} holds the trap fill, not code (freed, or never allocated)`,
    );
  }
}

/** Check once now (under the shared lock in mprotect mode), then wrap the raw call. */
export function makeFunction<T extends HostFunction>(site: CallSite): T {
  const lock = site.lock;
  const shared = lock !== null && !lock.heldByMe();
  if (shared) lock.acquireShared();
  try {
    checkCallable(site, false);
  } finally {
    if (shared) lock.releaseShared();
  }
  const raw = site.raw();
  const onCall = site.onCall;
  if (lock === null) {
    return ((...args: unknown[]) => {
      checkCallable(site, true);
      return raw(...args);
    }) as T;
  }
  return ((...args: unknown[]) => {
    if (site.isClosed()) throw new BackendError('ECLOSED', 'host backend is closed');
    if (lock.heldByMe()) {
      checkCallable(site, true);
      return raw(...args);
    }
    lock.acquireShared();
    try {
      checkCallable(site, true);
      onCall?.();
      return raw(...args);
    } finally {
      lock.releaseShared();
    }
  }) as T;
}

/** Most decoded per-address callables kept (see Callables.raw). */
const RAW_CACHE_MAX = 4096;

/** One backend's callables: parsed signatures, the stub per signature, decoded addresses. */
export class Callables {
  private readonly protos = new Map<string, TypeObject>();
  /** The stub for each signature (trampoline.ts), or null where the stub cannot pass its arguments. */
  private readonly stubs = new Map<string, HostFunction | null>();
  /** koffi.decode results by "va signature" for the rest; cleared when it reaches RAW_CACHE_MAX. */
  private readonly raws = new Map<string, HostFunction>();

  /** `trampolineVa`: the stub's address, 0 when there is none (then every address is decoded). */
  constructor(private readonly trampolineVa: number) {}

  /**
   * The unchecked callable for (va, signature): through the shared stub where the signature allows
   * (one koffi.decode per signature and thread, trampoline.ts), else koffi.decode of the address,
   * cached. koffi.decode is slow (about 5 us here against 30 ns for a call) and, in koffi 3.3.4,
   * aborts the whole process when a worker is terminated inside it (see the header). A decoded callable
   * is a pure function of address and signature, and the wrapper re-checks the page before every
   * call, so a stale cache entry is harmless.
   */
  raw(va: number, signature: string): HostFunction {
    let stub = this.stubs.get(signature);
    if (stub === undefined) {
      const stubProto = this.trampolineVa === 0 ? null : trampolineProto(signature, this.proto(signature));
      stub = stubProto === null ? null : (koffi.decode(this.trampolineVa, stubProto) as HostFunction);
      this.stubs.set(signature, stub);
    }
    if (stub !== null) {
      const via = stub;
      return (...args: unknown[]) => via(va, ...args);
    }
    const key = `${va} ${signature}`;
    let raw = this.raws.get(key);
    if (raw === undefined) {
      const type = this.proto(signature);
      if (this.raws.size >= RAW_CACHE_MAX) this.raws.clear();
      raw = koffi.decode(va, type) as HostFunction;
      this.raws.set(key, raw);
    }
    return raw;
  }

  /** The koffi prototype for a C signature (HostError EINVAL if it does not parse), cached. */
  proto(signature: string): TypeObject {
    let p = this.protos.get(signature);
    if (p === undefined) {
      try {
        p = koffi.proto(signature);
      } catch (e) {
        throw new HostError('EINVAL', `bad C signature '${signature}': ${(e as Error).message}`);
      }
      this.protos.set(signature, p);
    }
    return p;
  }
}
