/**
 * Shared helpers for the fidelity tests (test/fidelity-*.test.ts), not a test file itself.
 *
 * Each fidelity test pins ONE operation of one Linux design to what the named Linux function
 * costs, read from the machine's counters on a fresh machine. Counts that only the design decides
 * (set_memory calls, text_poke calls, vmalloc/vfree calls) are pinned exactly. TLB shootdowns
 * also depend on the machine (a large-page split or collapse may add a flush_tlb_all; a vfree with
 * VM_FLUSH_RESET_PERMS may split the direct map), so they are pinned exactly only where no split,
 * collapse or vfree can happen, and otherwise bounded from below by the CPA calls that change a
 * PTE (each such call ends in at least one global flush, cpa_flush()).
 */
import assert from 'node:assert/strict';
import { createMachine, type Machine } from '../src/machine/machine.js';
import { type MachineCounters, PTE_NX, PTE_RW } from '../src/machine/types.js';
import { type InstrumentedAllocator, POLICIES, type PolicyName } from '../src/policies/index.js';
import type { AllocHint, ModuleSection } from '../src/policies/types.js';

export const GIB = 2 ** 30;
export const PAGE = 4096;
export const SZ_2M = 2 * 1024 * 1024;

/** A fresh 4-CPU machine of `arch` and the named design on it. */
export function fresh(
  name: PolicyName,
  arch: 'x86_64' | 'arm64' | 'generic' = 'x86_64',
): { m: Machine; p: InstrumentedAllocator } {
  const m = createMachine({ arch, memoryBytes: 2 * GIB, cpus: 4, seed: 5 });
  return { m, p: POLICIES[name].create(m, 5) };
}

/** What one operation cost, from the machine's counters. */
export type Cost = Record<
  | 'cpaCalls'
  | 'shootdowns'
  | 'localFlushes'
  | 'broadcastFlushes'
  | 'pokes'
  | 'vmallocs'
  | 'vfrees'
  | 'directMapSplits',
  number
>;

export function measure(m: Machine, fn: () => void): Cost {
  const c0: MachineCounters = { ...m.counters };
  fn();
  const c = m.counters;
  const d = (k: keyof MachineCounters): number => c[k] - c0[k];
  return {
    cpaCalls: d('cpaCalls'),
    shootdowns: d('shootdowns'),
    localFlushes: d('localFlushes'),
    broadcastFlushes: d('broadcastFlushes'),
    pokes: d('pokes'),
    vmallocs: d('vmallocs'),
    vfrees: d('vfrees'),
    directMapSplits: d('splitsDirectMap2M') + d('splitsDirectMap1G'),
  };
}

/** Code bytes that are never a trap pattern (0xcc, an arm64 BRK word or zero). */
export function code(n: number, salt = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = 0x40 + ((i * 7 + salt) % 0x30);
  return b;
}

/** alloc + write + finalize, as a loader or JIT does; returns the address. */
export function load(
  p: InstrumentedAllocator,
  type: Parameters<InstrumentedAllocator['alloc']>[0],
  sizeBytes: number,
  hint: AllocHint = {},
): number {
  const va = p.alloc(type, sizeBytes, type === 'bpf' ? 64 : 1, hint);
  p.write(va, code(sizeBytes));
  p.finalize(va);
  return va;
}

/** A typical module: text, rodata, ro_after_init, data, and init text and data. */
export const MODULE: readonly ModuleSection[] = [
  { type: 'module_text', sizeBytes: 3 * PAGE + 100, init: false },
  { type: 'module_rodata', sizeBytes: PAGE + 1, init: false },
  { type: 'module_ro_after_init', sizeBytes: 64, init: false },
  { type: 'module_data', sizeBytes: 2 * PAGE, init: false },
  { type: 'module_text', sizeBytes: 500, init: true },
  { type: 'module_data', sizeBytes: 200, init: true },
];

/** load_module: allocate every section, write each, finalize each; returns the addresses. */
export function loadModule(p: InstrumentedAllocator, sections = MODULE): number[] {
  assert.ok(p.allocModule !== undefined, `${p.name} has allocModule`);
  const vas = p.allocModule(sections);
  for (let i = 0; i < sections.length; i++) p.write(vas[i], code(sections[i].sizeBytes, i));
  for (const va of vas) p.finalize(va);
  return vas;
}

/** Protection of the leaf mapping `va`: is it writable, is it executable? */
export function protOf(m: Machine, va: number): { w: boolean; x: boolean } {
  const t = m.kernelPt.walk(va);
  assert.ok(t !== null, `${va.toString(16)} is mapped`);
  return { w: (t.flags & PTE_RW) !== 0, x: (t.flags & PTE_NX) === 0 };
}
