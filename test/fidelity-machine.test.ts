/**
 * Fidelity tests of the simulated machine: single operations pinned to what the named Linux code
 * path does to page tables and TLBs (issue 11 items 5, 6 and 11). Each test names the function.
 *
 * x86: arch/x86/mm/pat/set_memory.c (__split_large_page, cpa_flush, cpa_collapse_large_pages,
 * __set_pages_np / __set_pages_p), arch/x86/mm/tlb.c (flush_tlb_kernel_range,
 * tlb_single_page_flush_ceiling = 33). arm64: arch/arm64/mm/pageattr.c (change_memory_common),
 * arch/arm64/include/asm/tlbflush.h (broadcast TLBI, MAX_DVM_OPS = 512), arch/arm64/mm/mmu.c
 * (map_mem with NO_BLOCK_MAPPINGS under rodata=full). Both: mm/vmalloc.c (vm_reset_perms,
 * _vm_unmap_aliases, __purge_vmap_area_lazy). Patching: arch/x86/kernel/alternative.c (__text_poke
 * with text_poke_memset, text_poke_set) and arch/arm64/kernel/patching.c (aarch64_insn_set).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ArchName } from '../src/arch/types.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { LeafChange, MachineCounters, VmArea } from '../src/machine/types.js';
import { PTE_PRESENT, protToFlags } from '../src/machine/types.js';
import { assertWx, errCode, GIB, modRange, snapshot } from './machine-helpers.js';

const PAGE = 4096;
const SZ_2M = 2 ** 21;

function machine(arch: ArchName = 'x86_64', memoryBytes = 2 * GIB, cpus = 4): Machine {
  return createMachine({ arch, memoryBytes, cpus, seed: 1 });
}

function range(m: Machine): { start: number; end: number } {
  return m.arch.name === 'arm64' ? m.arch.layout.vmalloc : modRange(m);
}

/** Counter deltas of `fn` (only the counters that moved). */
/** A 2 MiB VM_ALLOW_HUGE_VMAP area (one PMD leaf), RW, freed with VM_FLUSH_RESET_PERMS. */
function hugeArea(m: Machine): VmArea {
  return m.vmalloc({ sizeBytes: SZ_2M, range: range(m), prot: 'rw', allowHuge: true, flushResetPerms: true });
}

function delta(m: Machine, fn: () => void): Partial<MachineCounters> {
  const c0 = { ...m.counters };
  fn();
  const out: Partial<MachineCounters> = {};
  for (const k of Object.keys(c0) as (keyof MachineCounters)[]) {
    if (m.counters[k] !== c0[k]) out[k] = m.counters[k] - c0[k];
  }
  return out;
}

/** The direct-map leaf level of a frame's alias. */
function aliasLevel(m: Machine, pfn: number): number | undefined {
  return m.kernelPt.walk(m.arch.layout.directMapStart + pfn * PAGE)?.level;
}

/**
 * Fill the first GiB (x86 boot already split it into 2 MiB leaves for the image alias) with
 * live 'rw' vmalloc areas, so that the next frames come from a whole 1 GiB direct-map leaf. The
 * fillers are the machine's own areas, so checkConsistency() keeps accounting for every frame.
 */
function fillFirstGib(m: Machine): void {
  const firstGibFrames = GIB / PAGE;
  const fill = (sizeBytes: number, allowHuge: boolean): void => {
    for (;;) {
      const a = m.vmalloc({ sizeBytes, range: m.arch.layout.vmalloc, prot: 'rw', allowHuge });
      if (a.leafPfns.some((pfn) => pfn >= firstGibFrames)) return;
    }
  };
  fill(SZ_2M, true);
  fill(256 * PAGE, false);
}

/** Does any TLB array of `cpu` hold an entry overlapping the page at va? */
function cached(m: Machine, cpu: number, va: number): boolean {
  return m.tlbs[cpu].overlapping(va, PAGE).length > 0;
}

describe('x86 __split_large_page: every split ends in flush_tlb_all', () => {
  it('set_memory_ro splitting a direct-map 2 MiB leaf: one flush_tlb_all for the split, one cpa_flush', () => {
    const m = machine();
    const a = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    assert.equal(aliasLevel(m, a.leafPfns[0]), 2, 'the alias lies in a whole 2 MiB leaf (first GiB)');
    const d = delta(m, () => m.setMemory(a.va, 1, 'ro'));
    assert.equal(d.splitsDirectMap2M, 1);
    assert.equal(d.splitsDirectMap1G, undefined);
    // __split_large_page -> flush_tlb_all; cpa_flush -> flush_tlb_all (force_flush_all: alias).
    assert.equal(d.shootdowns, 2);
    assert.equal(d.fullTlbFlushes, 2);
    assert.equal(d.ipis, 2 * 3, 'on_each_cpu: cpus - 1 IPIs per flush');
    assert.equal(aliasLevel(m, a.leafPfns[0]), 1);
    assertWx(m, 0);
  });

  it('an alias change inside a whole 1 GiB direct-map leaf: two splits, two flush_tlb_all, plus cpa_flush', () => {
    const m = machine();
    fillFirstGib(m);
    const a = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    assert.equal(aliasLevel(m, a.leafPfns[0]), 3, 'the alias lies in a whole 1 GiB leaf');
    const d = delta(m, () => m.setMemory(a.va, 1, 'ro'));
    assert.equal(d.splitsDirectMap1G, 1);
    assert.equal(d.splitsDirectMap2M, 1);
    assert.equal(d.shootdowns, 3);
    assert.equal(d.fullTlbFlushes, 3);
    assert.equal(d.ptFramesAllocated, 2, 'one PMD table, one PTE table (split_large_page)');
  });

  it('cpa_collapse_large_pages: a set_memory_rox that collapses costs one more flush_tlb_all', () => {
    const m = machine();
    const h = hugeArea(m);
    m.setMemory(h.va, 512, 'rox');
    const open = delta(m, () => m.setMemory(h.va + 4 * PAGE, 1, 'rw'));
    assert.equal(open.splitsVmalloc2M, 1);
    // The vmalloc split, the alias's 2 MiB split, and cpa_flush.
    assert.equal(open.shootdowns, 3);
    const close = delta(m, () => m.setMemory(h.va + 4 * PAGE, 1, 'rox'));
    assert.equal(close.collapsesVmalloc2M, 1);
    assert.equal(close.shootdowns, 2, 'cpa_flush, then the collapse flush_tlb_all');
    assert.equal(close.fullTlbFlushes, 2);
    // Nothing collapses, no extra flush.
    const again = delta(m, () => m.setMemory(h.va, 512, 'rox'));
    assert.equal(again.shootdowns, undefined, 'nothing changed: no CPA_FLUSHTLB, no flush at all');
  });
});

describe('x86 cpa_flush / flush_tlb_kernel_range: page by page up to 33 pages, else the whole TLB', () => {
  it('a 4-page set_memory_ro flushes those pages on every CPU; a 40-page one flushes everything', () => {
    const m = machine();
    const dm = m.arch.layout.directMapStart;
    // Direct-map pages: no alias, so cpa_flush goes by range (no force_flush_all). Split the
    // 2 MiB leaf once first so the measured calls change 4 KiB leaves only.
    const base = dm + 300 * SZ_2M; // a 2 MiB leaf of the first GiB, far from the image
    m.setMemory(base, 1, 'ro');
    m.setMemory(base, 1, 'rw');
    const outside = base + 100 * PAGE;
    const touch = (): void => {
      for (let cpu = 0; cpu < m.cpuCount; cpu++) {
        m.load(cpu, base + PAGE, 1);
        m.load(cpu, outside, 1);
      }
    };
    touch();
    const small = delta(m, () => m.setMemory(base, 4, 'ro'));
    assert.equal(small.shootdowns, 1);
    assert.equal(small.fullTlbFlushes, undefined, '4 pages <= tlb_single_page_flush_ceiling');
    for (let cpu = 0; cpu < m.cpuCount; cpu++) {
      assert.equal(cached(m, cpu, base + PAGE), false, `cpu${cpu}: flushed page`);
      assert.equal(cached(m, cpu, outside), true, `cpu${cpu}: page outside the range survives`);
    }
    touch();
    const big = delta(m, () => m.setMemory(base, 40, 'rw'));
    assert.equal(big.shootdowns, 1);
    assert.equal(big.fullTlbFlushes, 1, '40 pages > 33: flush_tlb_all');
    for (let cpu = 0; cpu < m.cpuCount; cpu++) assert.equal(cached(m, cpu, outside), false);
    // The ceiling itself: 33 pages by range, 34 whole.
    assert.equal(delta(m, () => m.setMemory(base, 33, 'ro')).fullTlbFlushes, undefined);
    assert.equal(delta(m, () => m.setMemory(base, 34, 'rw')).fullTlbFlushes, 1);
    assertWx(m, 0);
  });

  it('__purge_vmap_area_lazy obeys the same ceiling', () => {
    const m = machine();
    const a = m.vmalloc({ sizeBytes: 4 * PAGE, range: range(m), prot: 'rw' });
    m.vfree(a.va);
    const near = delta(m, () => m.purgeLazy());
    assert.deepEqual([near.shootdowns, near.fullTlbFlushes], [1, undefined], '5 pages with the guard');
    const b = m.vmalloc({ sizeBytes: 40 * PAGE, range: range(m), prot: 'rw' });
    m.vfree(b.va);
    assert.equal(delta(m, () => m.purgeLazy()).fullTlbFlushes, 1);
  });
});

describe('mm/vmalloc.c vm_reset_perms and _vm_unmap_aliases', () => {
  it('vfree with VM_FLUSH_RESET_PERMS of a 1-page area in a whole 2 MiB direct-map leaf splits it and flushes', () => {
    const m = machine();
    const a = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    const pfn = a.leafPfns[0];
    assert.equal(aliasLevel(m, pfn), 2);
    // Watch the direct-map PTE go invalid and come back (set_direct_map_invalid_noflush, then
    // set_direct_map_default_noflush), as a real not-present entry.
    const aliasVa = m.arch.layout.directMapStart + pfn * PAGE;
    const seen: string[] = [];
    m.kernelPt.addListener({
      onLeafChange(c: LeafChange) {
        // Changes of the existing leaf only (a split also reports its new pieces, old = null).
        if (c.va !== aliasVa || c.old === null || c.next === null) return;
        const present = (c.next.flags & PTE_PRESENT) !== 0;
        seen.push(present ? 'present' : 'invalid');
        if (!present) {
          assert.equal(m.kernelPt.walk(aliasVa), null, 'hardware finds no translation');
          assert.equal(m.kernelPt.lookup(aliasVa)?.pfn, pfn, 'the PTE keeps its frame');
        }
      },
    });
    const dm0 = m.directMapStats();
    const d = delta(m, () => m.vfree(a.va));
    assert.deepEqual(seen, ['invalid', 'present']);
    assert.equal(d.splitsDirectMap2M, 1, '__set_pages_np splits the whole leaf');
    // __split_large_page's flush_tlb_all, then one flush_tlb_kernel_range over the direct-map
    // page and the vmalloc area (far apart: above the ceiling, a full flush).
    assert.equal(d.shootdowns, 2);
    assert.equal(d.fullTlbFlushes, 2);
    assert.equal(aliasLevel(m, pfn), 1, 'the direct map stays split');
    assert.equal(m.kernelPt.walk(aliasVa)?.flags, protToFlags('rw'));
    assert.deepEqual(m.directMapStats(), {
      ...dm0,
      bytes4k: dm0.bytes4k + SZ_2M,
      bytes2m: dm0.bytes2m - SZ_2M,
    });
    // The area was purged with the flush: its VA is free again at once.
    assert.equal(m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw' }).va, a.va);
    assertWx(m, 0);
    m.checkConsistency();
  });

  it('a 2 MiB huge area: its direct-map alias is split to 4 KiB on vfree (HUGE_VMALLOC passes small pages)', () => {
    const m = machine();
    const h = hugeArea(m);
    m.setMemory(h.va, 512, 'rox'); // the whole 2 MiB alias leaf turns read-only in place
    assert.equal(aliasLevel(m, h.leafPfns[0]), 2);
    const d = delta(m, () => m.vfree(h.va));
    assert.equal(d.splitsDirectMap2M, 1);
    assert.equal(d.shootdowns, 2);
    assert.equal(aliasLevel(m, h.leafPfns[0] + 511), 1);
    m.checkConsistency();
  });

  it('change_page_attr_set_clr calls vm_unmap_aliases first: pending lazy areas are purged with a flush', () => {
    const m = machine();
    const lazy = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw' });
    const b = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    m.setMemory(b.va, 1, 'ro'); // splits done; later calls change 4 KiB leaves only
    const plain = delta(m, () => m.setMemory(b.va, 1, 'rw'));
    assert.equal(plain.shootdowns, 1, 'no lazy area: cpa_flush only');
    assert.equal(delta(m, () => m.vfree(lazy.va)).shootdowns, undefined, 'lazy vfree: no flush yet');
    const withLazy = delta(m, () => m.setMemory(b.va, 1, 'ro'));
    assert.equal(withLazy.shootdowns, 2, '__purge_vmap_area_lazy flush, then cpa_flush');
    assert.equal(m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw' }).va, lazy.va, 'VA released');
    // A failed call purges nothing (a failed call changes nothing).
    const c = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw' });
    m.vfree(c.va);
    const snap = snapshot(m);
    assert.equal(
      errCode(() => m.setMemory(b.va, 2, 'ro')),
      'ENOENT',
    );
    assert.equal(snapshot(m), snap);
  });

  it('vfree is atomic: a failure at every physical allocation inside it changes nothing, and a retry succeeds', () => {
    // Two identical machines: one frees without faults (the reference), one with each fault.
    const setup = (): { m: Machine; vas: number[] } => {
      const m = machine('x86_64', 2 * GIB, 2);
      fillFirstGib(m);
      const a = m.vmalloc({ sizeBytes: 3 * PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
      const h = hugeArea(m);
      const lazy = m.vmalloc({ sizeBytes: PAGE, range: range(m), prot: 'rw' });
      m.vfree(lazy.va); // one lazy area pending: the reset-perms flush purges it
      return { m, vas: [a.va, h.va] };
    };
    const ref = setup();
    const allocs: number[] = [];
    const final: string[] = [];
    for (const va of ref.vas) {
      const n0 = ref.m.phys.allocCount(0);
      ref.m.vfree(va);
      allocs.push(ref.m.phys.allocCount(0) - n0);
      final.push(snapshot(ref.m));
    }
    // The small area's vfree splits its 1 GiB direct-map leaf and then a 2 MiB one; the huge
    // area's frames then lie in a 2 MiB leaf of that GiB, split once more.
    assert.deepEqual(allocs, [2, 1]);
    const { m, vas } = setup();
    for (let i = 0; i < vas.length; i++) {
      for (let nth = 1; nth <= allocs[i]; nth++) {
        const before = snapshot(m);
        const c0 = { ...m.counters };
        m.phys.injectFailure(0, nth);
        assert.equal(
          errCode(() => m.vfree(vas[i])),
          'ENOMEM',
          `area ${i}, allocation ${nth}`,
        );
        m.phys.clearInjectedFailures();
        assert.equal(snapshot(m), before, `area ${i}: failed vfree #${nth} left a trace`);
        assert.deepEqual({ ...m.counters }, c0);
        assert.ok(m.findArea(vas[i]) !== undefined, 'the area is still live');
        m.checkConsistency();
        assertWx(m, 0);
      }
      m.vfree(vas[i]);
      assert.equal(snapshot(m), final[i], `area ${i}: the retry ends where a clean vfree does`);
    }
    m.checkConsistency();
  });
});

describe('arm64: change_memory_common, broadcast TLBI, a 4 KiB linear map', () => {
  it('set_memory_ro: one broadcast flush per linear-alias page and one for the range; no IPI, no split', () => {
    const m = machine('arm64', 16 * GIB);
    assert.deepEqual(m.directMapStats(), { bytes4k: 16 * GIB, bytes2m: 0, bytes1g: 0 }, 'map_mem: 4 KiB');
    const a = m.vmalloc({ sizeBytes: 4 * PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    const d = delta(m, () => m.setMemory(a.va, 4, 'ro'));
    assert.equal(d.broadcastFlushes, 4 + 1);
    assert.equal(d.shootdowns, undefined);
    assert.equal(d.ipis, undefined);
    assert.equal(d.fullTlbFlushes, undefined, 'single pages and a 4-page range: below MAX_DVM_OPS');
    for (const k of ['splitsDirectMap2M', 'splitsDirectMap1G', 'ptFramesAllocated'] as const) {
      assert.equal(d[k], undefined, `${k}: the linear map is already 4 KiB`);
    }
    for (const pfn of a.leafPfns) {
      const t = m.kernelPt.walk(m.arch.layout.directMapStart + pfn * PAGE);
      assert.equal(t?.flags, protToFlags('ro'), 'linear alias read-only');
    }
    // set_memory_rox = set_memory_ro + set_memory_x (include/linux/set_memory.h).
    const rox = delta(m, () => m.setMemory(a.va, 4, 'rox'));
    assert.equal(rox.broadcastFlushes, 4 + 1 + 1);
    assert.equal(rox.shootdowns, undefined);
    assertWx(m, 0);
    // vm_reset_perms: no split; one flush_tlb_all (the linear and vmalloc ranges are far apart).
    const free = delta(m, () => m.vfree(a.va));
    assert.deepEqual([free.broadcastFlushes, free.fullTlbFlushes, free.shootdowns], [1, 1, undefined]);
    assert.equal(free.ptFramesAllocated, undefined, 'set_direct_map_*_noflush need no page-table frame');
    assert.equal(m.directMapStats().bytes4k, 16 * GIB);
    m.checkConsistency();
  });

  it('flush_tlb_kernel_range flushes everything from MAX_DVM_OPS = 512 pages', () => {
    const m = machine('arm64');
    const a = m.vmalloc({ sizeBytes: 512 * PAGE, range: range(m), prot: 'rw' });
    assert.equal(delta(m, () => m.setMemory(a.va, 511, 'rwx')).fullTlbFlushes, undefined);
    assert.equal(delta(m, () => m.setMemory(a.va, 512, 'rw')).fullTlbFlushes, 1);
  });

  it('generic keeps x86 IPIs', () => {
    const m = machine('generic');
    const a = m.vmalloc({ sizeBytes: PAGE, range: m.arch.layout.vmalloc, prot: 'rw', flushResetPerms: true });
    const d = delta(m, () => m.setMemory(a.va, 1, 'ro'));
    assert.ok((d.shootdowns ?? 0) > 0 && d.broadcastFlushes === undefined);
    assert.equal(d.ipis, (d.shootdowns ?? 0) * 3);
  });
});

describe('text_poke_set (x86 __text_poke with text_poke_memset) and aarch64_insn_set: a fill costs what a copy costs', () => {
  /** A 4-page ROX area in the arch's module range, and what a 9,000-byte copy and fill at +100 cost. */
  const costs = (arch: ArchName) => {
    const m = machine(arch);
    const a = m.vmalloc({ sizeBytes: 4 * PAGE, range: range(m), prot: 'rw', flushResetPerms: true });
    m.setMemory(a.va, 4, 'rox');
    const copy = delta(m, () => m.poke(0, a.va + 100, new Uint8Array(9000).fill(7)));
    const fill = delta(m, () => m.pokeSet(0, a.va + 100, 9000, m.arch.trapPattern));
    const filled = m.load(0, a.va + 100, 9000);
    return { m, copy, fill, filled };
  };

  it('x86: the same steps of at most two pages through poking_mm, one local flush each, no IPI', () => {
    const { m, copy, fill, filled } = costs('x86_64');
    // min(2 * PAGE - offset, remaining): 8,092 then 908 bytes (text_poke_copy_locked / text_poke_set's loop).
    assert.deepEqual(fill, {
      pokes: 1,
      pokeBytes: 9000,
      pokeSteps: 2,
      localFlushes: 2,
      pageWalks: fill.pageWalks,
    });
    assert.equal(fill.pokeSteps, copy.pokeSteps);
    assert.equal(fill.localFlushes, copy.localFlushes);
    assert.ok(
      filled.every((b) => b === 0xcc),
      'INT3 everywhere',
    );
    assertWx(m, 0);
  });

  it('arm64: one fixmap page per step, a broadcast TLBI per step, one I-cache clean', () => {
    const { m, copy, fill, filled } = costs('arm64');
    // Pages touched by [+100, +9100): 3, each mapped at FIX_TEXT_POKE0, written, cleared, TLBI'd.
    assert.equal(fill.pokeSteps, 3);
    assert.equal(fill.broadcastFlushes, 3);
    assert.equal(fill.icacheFlushes, 1);
    assert.equal(fill.ipis ?? 0, 0);
    assert.deepEqual(
      [fill.pokeSteps, fill.broadcastFlushes, fill.icacheFlushes],
      [copy.pokeSteps, copy.broadcastFlushes, copy.icacheFlushes],
    );
    const brk = m.arch.trapPattern;
    assert.ok(
      filled.every((b, i) => b === brk[(100 + i) % brk.length]),
      'BRK in its byte order, phase from the area start',
    );
    assertWx(m, 0);
  });
});
