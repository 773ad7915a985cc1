/**
 * ftrace on the host backend: real `__fentry__` sites in real executable memory of this process,
 * patched into calls to a real trampoline with the text_poke_bp protocol, and run by the CPU.
 *
 * Why: on the simulated machine the patching is counted; here the CPU is the oracle. A site that
 * was left half-patched, a call encoded to the wrong target or a trampoline that clobbers the
 * function's arguments gives a wrong answer or a crash, not a wrong count.
 *
 * What it stands in for, after Linux 6.1 x86 (arch/x86/kernel/ftrace.c, kernel/trace/ftrace.c):
 * - loadText(): a module's text after ftrace_module_init(): every function starts with the 5-byte
 *   NOP (x86_nops[5]) the `call __fentry__` became; the body is `lea eax, [rdi + k]; ret`, padded
 *   with int3 to 16 bytes, so each function's answer says which one ran. One `module_text`
 *   allocation, one update() (the loader's single write).
 * - attach(): register_ftrace_function() for one ops: the trampoline is allocated as type
 *   `ftrace` (create_trampoline's alloc_tramp) and written once; it does what a tracer callback
 *   is for, counting the call in the ops' `module_data` counter, and returns into the function
 *   with every argument register intact:
 *     push rax; movabs rax, COUNTER; lock inc qword [rax]; pop rax; ret
 *   Then each site becomes `call trampoline` (ftrace_call_replace) in text_poke_bp_batch() order:
 *   int3 on every site, tails, first bytes, each pass one write per site through update(), with
 *   the sync between passes counted. detach() writes the NOPs back the same way and frees the
 *   trampoline (arch_ftrace_trampoline_free).
 * What differs: the syncs (text_poke_sync, an IPI that serializes every CPU) are counted, not
 * performed, and no other thread runs the text while it is patched: user space has no int3
 * handler that emulates the call (poke_int3_handler), so a site is called only between updates.
 * One ops per site (a second ops on a site would go through ftrace_ops_list_func): refused.
 */
import { assert } from '../../base/assert.js';
import type { Execmem } from '../../execmem/execmem.js';
import type { HostBackend } from '../../host/backend.js';
import { FtraceError } from './errors.js';
import { batchSteps, splitBatches } from './records.js';
import { CALL_OPCODE, callInsn, INT3_OPCODE, MCOUNT_INSN_BYTES, sameBytes, X86_NOP5 } from './x86.js';

/** Bytes per function: NOP5 + lea eax,[rdi+imm8] (3) + ret (1) = 9, padded with int3. */
export const HOST_FUNCTION_BYTES = 16;
/** At most this many functions: the addend is an imm8 (1..127). */
export const HOST_FUNCTIONS_MAX = 127;
/** The trampoline: push rax (1), movabs rax imm64 (10), lock inc qword [rax] (4), pop rax (1), ret (1). */
export const HOST_TRAMPOLINE_BYTES = 17;

export interface HostFunction {
  readonly index: number;
  /** The site: the function's first byte (the fentry NOP). */
  readonly va: number;
  /** What it returns for x: x + addend. */
  readonly addend: number;
  readonly call: (x: number) => number;
}

export interface HostTracer {
  readonly name: string;
  readonly trampolineVa: number;
  readonly counterVa: number;
  readonly sites: readonly HostFunction[];
}

/** What one patch run did: writes through update(), text_poke_bp batches, syncs counted. */
export interface HostPatchCounts {
  readonly writes: number;
  readonly batches: number;
  readonly syncs: number;
}

function functionBytes(addend: number): Uint8Array {
  const out = new Uint8Array(HOST_FUNCTION_BYTES).fill(INT3_OPCODE);
  out.set(X86_NOP5, 0);
  out.set([0x8d, 0x47, addend, 0xc3], MCOUNT_INSN_BYTES); // lea eax, [rdi+disp8]; ret
  return out;
}

function trampolineBytes(counterVa: number): Uint8Array {
  const out = new Uint8Array(HOST_TRAMPOLINE_BYTES);
  out.set([0x50, 0x48, 0xb8], 0); // push rax; REX.W B8+r: mov rax, imm64
  new DataView(out.buffer).setBigUint64(3, BigInt(counterVa), true);
  out.set([0xf0, 0x48, 0xff, 0x00, 0x58, 0xc3], 11); // lock inc qword [rax]; pop rax; ret
  return out;
}

export class HostFtrace {
  readonly functions: readonly HostFunction[];
  readonly textVa: number;
  private readonly owner = new Map<number, HostTracer>();
  private readonly tracers = new Set<HostTracer>();
  private closed = false;
  /** Totals over every patch run (the counted syncs included). */
  readonly counts = { writes: 0, batches: 0, syncs: 0 };

  constructor(
    private readonly em: Execmem,
    host: HostBackend,
    functionCount: number,
  ) {
    if (!Number.isInteger(functionCount) || functionCount < 1 || functionCount > HOST_FUNCTIONS_MAX)
      throw new FtraceError('EINVAL', `functionCount must be 1..${HOST_FUNCTIONS_MAX}, got ${functionCount}`);
    const text = new Uint8Array(functionCount * HOST_FUNCTION_BYTES);
    for (let i = 0; i < functionCount; i++) text.set(functionBytes(i + 1), i * HOST_FUNCTION_BYTES);
    this.textVa = em.allocVa('module_text', text.length, { alignBytes: HOST_FUNCTION_BYTES });
    try {
      em.updateVa(this.textVa, text);
      this.functions = Array.from({ length: functionCount }, (_, i) => {
        const va = this.textVa + i * HOST_FUNCTION_BYTES;
        const fn = host.fn(va, 'int32_t (int32_t)');
        return { index: i, va, addend: i + 1, call: (x: number) => fn(x) as number };
      });
    } catch (err) {
      em.freeVa(this.textVa);
      throw err;
    }
  }

  /** The 5 bytes at a function's site, as the CPU will fetch them. */
  site(f: HostFunction): Uint8Array {
    return this.em.readVa(f.va, MCOUNT_INSN_BYTES);
  }

  /** Calls counted by a tracer's trampoline so far. */
  hits(t: HostTracer): number {
    return Number(new DataView(this.em.readVa(t.counterVa, 8).buffer).getBigUint64(0, true));
  }

  /** register_ftrace_function() for an ops filtered to `sites`; refused with nothing changed. */
  attach(name: string, sites: readonly HostFunction[]): HostTracer {
    this.checkOpen();
    if (sites.length === 0) throw new FtraceError('ENOMATCH', `${name}: no sites`);
    for (const f of sites) {
      if (this.functions[f.index] !== f) throw new FtraceError('EINVAL', `${name}: not a site of this text`);
      const other = this.owner.get(f.index);
      if (other) throw new FtraceError('EBUSY', `${name}: site ${f.index} is traced by ${other.name}`);
      if (!sameBytes(this.site(f), X86_NOP5))
        throw new FtraceError('EBADSITE', `${name}: site ${f.index} is not the fentry NOP`);
    }
    const counterVa = this.em.allocVa('module_data', 8, { alignBytes: 8 });
    let trampolineVa = 0;
    try {
      this.em.updateVa(counterVa, new Uint8Array(8));
      trampolineVa = this.em.allocVa('ftrace', HOST_TRAMPOLINE_BYTES);
      this.em.updateVa(trampolineVa, trampolineBytes(counterVa));
    } catch (err) {
      if (trampolineVa !== 0) this.em.freeVa(trampolineVa);
      this.em.freeVa(counterVa);
      throw err;
    }
    const sorted = [...sites].sort((a, b) => a.va - b.va);
    const tracer: HostTracer = { name, trampolineVa, counterVa, sites: sorted };
    this.patch(sorted.map((f) => ({ va: f.va, bytes: callInsn(f.va, trampolineVa) })));
    for (const f of sorted) this.owner.set(f.index, tracer);
    this.tracers.add(tracer);
    return tracer;
  }

  /** unregister_ftrace_function(): NOPs back, then the trampoline and its counter freed. */
  detach(t: HostTracer): void {
    this.checkOpen();
    if (!this.tracers.delete(t)) throw new FtraceError('EINVAL', `${t.name} is not attached here`);
    for (const f of t.sites) {
      const b = this.site(f);
      assert(
        b[0] === CALL_OPCODE && sameBytes(b, callInsn(f.va, t.trampolineVa)),
        `site ${f.index} calls elsewhere`,
      );
    }
    this.patch(t.sites.map((f) => ({ va: f.va, bytes: X86_NOP5.slice() })));
    for (const f of t.sites) this.owner.delete(f.index);
    this.em.freeVa(t.trampolineVa);
    this.em.freeVa(t.counterVa);
  }

  /** Detach every tracer and free the text. */
  close(): void {
    if (this.closed) return;
    for (const t of [...this.tracers]) this.detach(t);
    this.closed = true;
    this.em.freeVa(this.textVa);
  }

  /** text_poke_bp_batch(): int3 / sync / tails / sync / first bytes / sync per batch, in one session. */
  private patch(updates: readonly { va: number; bytes: Uint8Array }[]): HostPatchCounts {
    const int3 = Uint8Array.of(INT3_OPCODE);
    const batches = splitBatches(updates.map((u) => u.va));
    let writes = 0;
    let syncs = 0;
    this.em.batch(() => {
      for (const batch of batches) {
        for (const step of batchSteps(batch)) {
          if (step.kind === 'sync') {
            syncs++;
            continue;
          }
          const u = updates[step.site];
          if (step.kind === 'int3') this.em.updateVa(u.va, int3);
          else if (step.kind === 'tail') this.em.updateVa(u.va + 1, u.bytes.subarray(1));
          else this.em.updateVa(u.va, u.bytes.subarray(0, 1));
          writes++;
        }
      }
    });
    this.counts.writes += writes;
    this.counts.batches += batches.length;
    this.counts.syncs += syncs;
    return { writes, batches: batches.length, syncs };
  }

  private checkOpen(): void {
    if (this.closed) throw new FtraceError('EINVAL', 'closed');
  }
}
