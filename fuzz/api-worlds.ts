/**
 * The worlds of the `api` fuzz target (api.ts): a backend and an allocator on it, with what the
 * oracle needs to judge them. The fake test backend (every arch, with and without an alias
 * write) is cheap and can fail mapBlock / protect on demand; the simulated machine (every arch)
 * fails a physical allocation on demand and checks its own frame ownership. The host backend
 * (real memory of this process, dualmap or mprotect) runs the same sequences on real mappings:
 * its probe reads the arena, takes protections from the backend's page table, and checks
 * /proc/self/maps for a W+X mapping and for protections that disagree with the page table. It
 * arms no faults (real mmap failures cannot be injected), so it tests the argument and state
 * side of the contract; each host world is closed at the end of its case.
 *
 * Why two snapshots: a failed call must leave the contract's state unchanged (stats.ts
 * ExecmemCounters): all of it, cost counters included, for every failure but a growth that
 * failed after the backend mapped its block, whose cost counters (and the backend's page tables)
 * legitimately moved; that case compares the state without them.
 */
import { ARCHES } from '../src/arch/index.js';
import type { Rng } from '../src/base/rng.js';
import { Execmem } from '../src/execmem/execmem.js';
import { SimBackend } from '../src/execmem/sim-backend.js';
import { COST_COUNTERS } from '../src/execmem/stats.js';
import { type HostBackend, openHost, readMaps } from '../src/host/index.js';
import { createMachine } from '../src/machine/machine.js';
import { ExecmemModel, fakeProbe } from '../test/helpers/execmem-model.js';
import { FakeBackend } from '../test/helpers/fake-backend.js';
import { simProbe } from '../test/helpers/sim-probe.js';

const ARCH_NAMES = ['x86_64', 'arm64', 'generic'] as const;

/** A backend and an allocator on it, with what the oracle needs to judge it. */
export interface World {
  readonly name: string;
  readonly em: Execmem;
  readonly model: ExecmemModel;
  /** The contract's state; without the cost counters when `costs` is false (a failed growth). */
  snapshot(costs: boolean): string;
  /** Arm one fault for the next call; returns what was armed ('' for nothing). */
  arm(rng: Rng): string;
  disarm(): void;
  /** The invariants a backend checks itself beyond the model (sim: frame ownership). */
  deepCheck(): void;
  /** Release what the world holds outside the JS heap (the host backend's mappings). */
  close(): void;
}

function statsState(em: Execmem, costs: boolean): string {
  const s = em.stats();
  const counters: Record<string, number> = { ...s.counters };
  for (const k of COST_COUNTERS) {
    if (!costs || k === 'atomicRefusals' || k === 'allocSearchSteps') delete counters[k];
  }
  return JSON.stringify({ ...s, counters });
}

export function fakeWorld(rng: Rng): World {
  const arch = rng.pick(ARCH_NAMES);
  const fb = new FakeBackend(ARCHES[arch], { alias: arch === 'generic' ? false : rng.next() < 0.7 });
  const em = new Execmem(fb, { seed: rng.int(0, 99), granuleBytes: rng.pick([16, 64] as const) });
  return {
    name: `fake ${arch}${fb.hasAliasWrite ? '' : ' (no alias)'}`,
    em,
    model: new ExecmemModel(em, fakeProbe(fb)),
    snapshot: (costs) => `${statsState(em, costs)}|${fb.stateKey(costs)}`,
    arm(r) {
      if (r.next() < 0.5) {
        const code = r.pick(['ENOMEM', 'ENOSPC'] as const);
        fb.failMapBlock(r.int(1, 2), code);
        return `mapBlock fails with ${code}`;
      }
      fb.failProtect(r.int(1, 2));
      return 'protect fails';
    },
    disarm() {
      fb.failMapBlock(0);
      fb.failProtect(0);
    },
    deepCheck() {},
    close() {},
  };
}

export function simWorld(rng: Rng): World {
  const arch = rng.pick(ARCH_NAMES);
  const m = createMachine({ arch, memoryBytes: 2 ** 30, cpus: 2, seed: rng.int(0, 99) });
  const em = new Execmem(new SimBackend(m), { seed: 1 });
  return {
    name: `sim ${arch}`,
    em,
    model: new ExecmemModel(em, simProbe(m)),
    snapshot(costs) {
      const f = m.frameAccounting();
      const machine = costs
        ? { f, counters: m.counters, areas: m.areas(), dmap: m.directMapStats() }
        : { mapped: f.mappedFrames, freeOrTables: f.freeFrames + f.tableFrames, areas: m.areas() };
      return `${statsState(em, costs)}|${JSON.stringify(machine)}|${m.wxViolationCount()}`;
    },
    arm(r) {
      const order = r.next() < 0.8 ? 0 : 9;
      const nth = r.int(1, 3);
      m.phys.injectFailure(order, nth);
      return `physical allocation #${nth} of order ${order} fails`;
    },
    disarm: () => m.phys.clearInjectedFailures(),
    deepCheck: () => m.checkConsistency(),
    close() {},
  };
}

/** The arena's mappings in /proc/self/maps (its view and, in dualmap mode, its alias). */
function arenaMappings(h: HostBackend) {
  const ranges = h.report().families.flatMap((f) => {
    const bases = [f.viewBase, ...(f.aliasBase === null ? [] : [f.aliasBase])];
    return bases.map((b) => ({
      start: Number.parseInt(b, 16),
      end: Number.parseInt(b, 16) + f.capacityBytes,
    }));
  });
  return readMaps().filter((m) => ranges.some((r) => m.start < r.end && m.end > r.start));
}

/** A W+X mapping of the arena, or protections that disagree with the page table: a finding. */
function hostCheck(h: HostBackend): void {
  const wx = arenaMappings(h).find((m) => m.perms[1] === 'w' && m.perms[2] === 'x');
  if (wx !== undefined) throw new Error(`W+X arena mapping: ${wx.start.toString(16)} ${wx.perms}`);
  const mismatches = h.auditProtections();
  if (mismatches.length > 0) throw new Error(`protections disagree with the page table: ${mismatches[0]}`);
}

export function hostWorld(rng: Rng): World {
  const h = openHost({ mode: rng.pick(['dualmap', 'mprotect'] as const) });
  const em = new Execmem(h, { seed: 1, granuleBytes: rng.pick([16, 64] as const) });
  return {
    name: `host ${h.mode}`,
    em,
    model: new ExecmemModel(em, {
      raw: (va, n) => h.read(va, n),
      protAt: (va) => h.protAt(va) ?? undefined,
      check: () => hostCheck(h),
      mappedBytes: () => h.report().families.reduce((n, f) => n + f.mappedBytes, 0),
    }),
    snapshot: (costs) => `${statsState(em, costs)}|${JSON.stringify(h.report().families)}`,
    arm: () => '',
    disarm() {},
    deepCheck: () => hostCheck(h),
    close: () => h.close(),
  };
}
