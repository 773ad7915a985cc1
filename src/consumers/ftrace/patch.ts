/**
 * Live patching of call sites: text_poke_bp_batch() on the simulated machine.
 *
 * Why through the allocator's write and the machine's sync: module text belongs to the module,
 * and x86 ftrace rewrites it with text_poke() (arch/x86/kernel/alternative.c), the temporary-mm
 * alias write, never with set_memory_*. On the Linux designs that is exactly what their write
 * path does to finalized (read-only) text: LinuxPolicy.aliasWrite -> machine.poke, the text_poke
 * model (src/policies/common.ts). On our allocator the one write path is update(), which on x86
 * is the same kind of alias write (src/execmem/writer.ts helperWrite). So every design patches a
 * site through its own write path, which is what its kernel would use, and the costs (pokes,
 * poke steps, local flushes) come from the machine. The syncs between the passes
 * (text_poke_sync = on_each_cpu(do_sync_core)) are counted on the machine by `syncCores`.
 *
 * Reads (ftrace_verify_code's copy_from_kernel_nofault, text_poke_bp_batch's `tp[i].old`) are
 * taken from physical memory through the kernel page table without touching any TLB: their TLB
 * effect is not modelled.
 */
import { assert } from '../../base/assert.js';
import type { Machine } from '../../machine/machine.js';
import type { ExecAllocator } from '../../policies/types.js';
import { batchSteps, splitBatches } from './records.js';
import { INT3_OPCODE, MCOUNT_INSN_BYTES } from './x86.js';

const PAGE = 4096;

/** Bytes at a mapped kernel VA, read through the page table (no TLB effect). Null if unmapped. */
export function peek(machine: Machine, va: number, sizeBytes: number): Uint8Array | null {
  const out = new Uint8Array(sizeBytes);
  for (let done = 0; done < sizeBytes; ) {
    const at = va + done;
    const t = machine.kernelPt.walk(at);
    if (t === null) return null;
    const n = Math.min(PAGE - (at % PAGE), sizeBytes - done);
    out.set(machine.phys.read(t.pfn * PAGE + (at - t.va), n), done);
    done += n;
  }
  return out;
}

/** One 5-byte site update. */
export interface SiteUpdate {
  readonly va: number;
  readonly bytes: Uint8Array;
}

/** What one run of updates cost, as counted here (the machine counts the rest). */
export interface PatchCounts {
  readonly sites: number;
  readonly batches: number;
  readonly syncs: number;
  /** allocator.write() calls: one per pass per site. */
  readonly writes: number;
}

/**
 * Apply `updates` (in ftrace record order) as text_poke_queue() + text_poke_finish() do: cut into
 * batches (splitBatches), and per batch int3 / sync / tails / sync / first bytes / sync, each byte
 * range written through `allocator.write` and each sync on `machine.syncCores(cpu)`.
 */
export function pokeBatches(
  allocator: ExecAllocator,
  machine: Machine,
  cpu: number,
  updates: readonly SiteUpdate[],
): PatchCounts {
  const int3 = Uint8Array.of(INT3_OPCODE);
  const batches = splitBatches(updates.map((u) => u.va));
  let writes = 0;
  let syncs = 0;
  for (const batch of batches) {
    for (const step of batchSteps(batch)) {
      if (step.kind === 'sync') {
        machine.syncCores(cpu);
        syncs++;
        continue;
      }
      const u = updates[step.site];
      assert(u.bytes.length === MCOUNT_INSN_BYTES && u.bytes[0] !== INT3_OPCODE, 'a 5-byte update');
      if (step.kind === 'int3') allocator.write(u.va, int3.slice());
      else if (step.kind === 'tail') allocator.write(u.va + 1, u.bytes.slice(1));
      else allocator.write(u.va, u.bytes.slice(0, 1));
      writes++;
    }
  }
  return { sites: updates.length, batches: batches.length, syncs, writes };
}
