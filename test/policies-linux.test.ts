/**
 * Each re-implemented Linux design reproduces its source's defining behaviour on the simulated
 * machine (research/linux-execmem.md sections 2-3, research/lkml-thread.md section 3).
 *
 * Aaron Lu's figure (<Y2ioTodn+mBXdIqp@ziqianlu-desk2>): on an 8 GB x86-64 VM, 2048 sockex1
 * instances (three small JIT images each) grew DirectMap4k from 87,900 kB to 1,654,620 kB
 * (+1,566,720 kB, 18.7% of memory) before bpf_prog_pack, and not at all with it (the pack already
 * existed). Scaling used here: a 1 GiB machine with 256 instances (1/8 of both), and free memory
 * aged so that 20% of the 2 MiB blocks are broken (PhysMem.age). How fragmented Aaron's VM was is
 * unknown, so aging is a free parameter; with it order-0 frames come from scattered blocks as on
 * a long-running system (unaged, the buddy hands out contiguous frames and few 2 MiB direct-map
 * leaves are hit). The test asserts the direction (legacy splits, the pack does not after its
 * first allocation) and the size only to an order of magnitude: growth between 5% and 60% of
 * memory, where Aaron saw 18.7%. (At 8 GiB with all 2048 instances and the same aging the model
 * gives +1,634 MiB against Aaron's +1,530 MiB; too slow for a unit test.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng } from '../src/base/rng.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import { PTE_NX } from '../src/machine/types.js';
import { allocationRanges } from '../src/metrics/compare.js';
import { BPF_PROG_PACK_BYTES, BpfProgPackPolicy } from '../src/policies/bpf-prog-pack.js';
import type { InstrumentedAllocator } from '../src/policies/common.js';
import { ExecmemRoxPolicy } from '../src/policies/execmem-rox.js';
import { JitAlloc2023Policy } from '../src/policies/jit-alloc.js';
import { createExecmem610, createModuleAlloc } from '../src/policies/plain.js';

const GIB = 1024 ** 3;
const AARONLU_IMAGES = [64, 64, 192]; // "64 * 2 + 192 bytes" per sockex1 instance

function machine(ageFraction = 0): Machine {
  const m = createMachine({ arch: 'x86_64', memoryBytes: GIB, cpus: 4, seed: 11 });
  if (ageFraction > 0) m.phys.age(ageFraction, new Rng(99));
  return m;
}

function loadBpf(p: InstrumentedAllocator, sizeBytes: number, alignBytes = 64): number {
  const va = p.alloc('bpf', sizeBytes, alignBytes);
  const image = new Uint8Array(sizeBytes).fill(0x90);
  p.write(va, image);
  p.finalize(va);
  return va;
}

interface Cost {
  dm4kGrowth: number;
  splits: number;
  shootdowns: number;
  flips: number;
  pokes: number;
}

function measure(m: Machine, fn: () => void): Cost {
  const c0 = { ...m.counters };
  const d0 = m.directMapStats().bytes4k;
  fn();
  const c = m.counters;
  return {
    dm4kGrowth: m.directMapStats().bytes4k - d0,
    splits: c.splitsDirectMap2M - c0.splitsDirectMap2M + c.splitsDirectMap1G - c0.splitsDirectMap1G,
    shootdowns: c.shootdowns - c0.shootdowns,
    flips: c.cpaCalls - c0.cpaCalls,
    pokes: c.pokes - c0.pokes,
  };
}

/** Executable bytes mapped in the allocation ranges, and those on 2 MiB leaves (page tables). */
function execLeaves(m: Machine): { execBytes: number; largeBytes: number } {
  let execBytes = 0;
  let largeBytes = 0;
  for (const r of allocationRanges(m.arch, m)) {
    m.kernelPt.forEachLeaf(r.start, r.end, (t) => {
      if ((t.flags & PTE_NX) !== 0) return;
      const bytes = t.level === 2 ? 2 * 1024 * 1024 : 4096;
      execBytes += bytes;
      if (t.level === 2) largeBytes += bytes;
    });
  }
  return { execBytes, largeBytes };
}

describe("Aaron Lu's case: 2048 small BPF programs (scaled 1/8)", () => {
  const instances = 256;

  it('module_alloc splits the direct map: DirectMap4k grows on the order of 18.7% of memory', () => {
    const m = machine(0.2);
    const p = createModuleAlloc(m);
    const cost = measure(m, () => {
      for (let i = 0; i < instances; i++) for (const size of AARONLU_IMAGES) loadBpf(p, size);
    });
    const share = cost.dm4kGrowth / GIB;
    assert.ok(share > 0.05 && share < 0.6, `DirectMap4k growth ${(share * 100).toFixed(1)}% of memory`);
    assert.ok(cost.splits > 50, `direct-map splits: ${cost.splits}`);
    // bpf_jit_binary_lock_ro: set_memory_ro + set_memory_x, each a global shootdown (cpa_flush,
    // force_flush_all after the alias), and each direct-map split one more (__split_large_page
    // ends in flush_tlb_all).
    assert.equal(cost.flips, 2 * instances * AARONLU_IMAGES.length);
    assert.equal(cost.shootdowns, cost.flips + cost.splits);
    assert.equal(m.wxViolationCount(), 0);
  });

  it('bpf_prog_pack: once its pack exists, loads split nothing and flush only locally', () => {
    const m = machine(0.2);
    const p = new BpfProgPackPolicy(m);
    loadBpf(p, 64); // the pack is created here (Aaron's system had one before the test)
    const cost = measure(m, () => {
      for (let i = 0; i < instances; i++) for (const size of AARONLU_IMAGES) loadBpf(p, size);
    });
    assert.equal(cost.dm4kGrowth, 0);
    assert.equal(cost.splits, 0);
    assert.equal(cost.shootdowns, 0);
    assert.equal(cost.flips, 0);
    assert.equal(cost.pokes, instances * AARONLU_IMAGES.length, 'one text_poke_copy per program');
    assert.equal(p.packCount, 1, '(64 * 2 + 192) * 257 bytes fit one 2 MiB pack');
    assert.equal(m.wxViolationCount(), 0);
  });
});

describe('bpf_prog_pack', () => {
  it('packs 64-byte chunks first fit, invalidates with text_poke_set, frees an empty pack', () => {
    const m = machine();
    const p = new BpfProgPackPolicy(m);
    const a = loadBpf(p, 100); // 2 chunks
    const b = loadBpf(p, 64); // 1 chunk
    assert.equal(b - a, 128);
    const freeCost = measure(m, () => p.free(a));
    assert.equal(freeCost.shootdowns, 0, 'free is a poke, not a permission flip');
    assert.equal(freeCost.flips, 0);
    assert.deepEqual(m.load(0, a, 128), new Uint8Array(128).fill(0xcc), 'freed chunks hold int3');
    assert.equal(loadBpf(p, 128), a, 'first fit reuses the hole');
    const big = loadBpf(p, BPF_PROG_PACK_BYTES + 1);
    assert.equal(
      p.usage().mappedBytes,
      BPF_PROG_PACK_BYTES + BPF_PROG_PACK_BYTES + 4096,
      'dedicated, page-rounded',
    );
    for (const va of [a, b, big]) p.free(va);
    assert.equal(p.packCount, 0, 'pack freed when its bitmap empties');
    assert.equal(p.usage().mappedBytes, 0);
    assert.equal(m.wxViolationCount(), 0);
  });
});

describe('execmem-rox', () => {
  it('hands out ROX pieces of a 2 MiB block; every load and every free costs global shootdowns', () => {
    const m = machine();
    const p = new ExecmemRoxPolicy(m);
    const vas: number[] = [];
    const loads = measure(m, () => {
      for (let i = 0; i < 8; i++) vas.push(loadBpf(p, 300));
    });
    assert.equal(p.blockCount, 1);
    assert.equal(vas[1] - vas[0], 4096, 'page-granular first fit');
    const { execBytes, largeBytes } = execLeaves(m);
    assert.equal(
      largeBytes,
      execBytes,
      'the block is back on one 2 MiB leaf after restore_rox (x86 collapse)',
    );
    // execmem_alloc_rw-style write window: force_rw (set_memory_nx + _rw) then restore_rox.
    assert.equal(loads.flips, 1 + 8 * 3, 'block set_memory_rox once, then 3 CPA calls per load');
    for (const va of vas.slice(0, 7)) {
      const c = measure(m, () => p.free(va));
      assert.equal(c.flips, 3, 'free = force_rw (2) + restore_rox (1)');
      assert.ok(c.shootdowns >= 3, `free costs global shootdowns: ${c.shootdowns}`);
      assert.deepEqual(m.load(0, va, 300), new Uint8Array(300).fill(0xcc), 'freed memory is trap-filled');
    }
    assert.equal(loadBpf(p, 300), vas[0], 'first fit in address order');
    assert.equal(m.wxViolationCount(), 0);
  });

  it('releases a block only when it is entirely free', () => {
    const m = machine();
    const p = new ExecmemRoxPolicy(m);
    const a = loadBpf(p, 5000);
    const b = loadBpf(p, 100);
    p.free(a);
    assert.equal(p.blockCount, 1);
    p.free(b);
    assert.equal(p.blockCount, 0);
    assert.equal(p.usage().mappedBytes, 0);
  });
});

describe('jit_alloc-2023', () => {
  it('power-of-two classes on 4 KiB ROX slabs: no large pages, one set_memory_rox per slab', () => {
    const m = machine();
    const p = new JitAlloc2023Policy(m);
    const cost = measure(m, () => {
      // jit_alloc() takes no alignment: objects are aligned to their class size.
      for (let i = 0; i < 256; i++) loadBpf(p, 16, 1); // one full 16-byte slab
      loadBpf(p, 17, 1); // 32-byte class: a second slab
      loadBpf(p, 2049, 1); // above 2 KiB: module_alloc + set_memory_rox
    });
    assert.equal(p.slabs, 2);
    assert.equal(cost.flips, 3);
    assert.equal(cost.pokes, 258, 'jit_update = text_poke_copy for every write');
    const { execBytes, largeBytes } = execLeaves(m);
    assert.equal(execBytes, 3 * 4096, 'two slab pages and one page for the 2049-byte object');
    assert.equal(largeBytes, 0, 'large-page share is 0');
    assert.equal(m.wxViolationCount(), 0);
  });
});

describe('module_alloc vs execmem-6.10', () => {
  it('legacy finalizes text with set_memory_ro + set_memory_x, 6.10 with one set_memory_rox', () => {
    for (const [create, flips] of [
      [createModuleAlloc, 2],
      [createExecmem610, 1],
    ] as const) {
      const m = machine();
      const p = create(m);
      const va = p.alloc('module_text', 10_000);
      p.write(va, new Uint8Array(10_000).fill(0x90));
      const c = measure(m, () => p.finalize(va));
      assert.equal(c.flips, flips, p.name);
      // One cpa_flush per call, one flush_tlb_all per direct-map split of the alias.
      assert.ok(c.splits > 0, `${p.name}: the alias splits the direct map`);
      assert.equal(c.shootdowns, flips + c.splits, p.name);
      const free = measure(m, () => p.free(va));
      assert.equal(free.shootdowns, 1, `${p.name}: vfree with VM_FLUSH_RESET_PERMS flushes once`);
      assert.equal(m.wxViolationCount(), 0);
    }
  });
});

describe('kprobe_insn_cache on the plain path', () => {
  it('packs 16-byte slots 256 to a ROX page and keeps the last page when all are freed', () => {
    const m = machine();
    const p = createExecmem610(m);
    const slots: number[] = [];
    const cost = measure(m, () => {
      for (let i = 0; i < 300; i++) {
        const va = p.alloc('kprobes', 16);
        p.write(va, new Uint8Array(16).fill(0x90));
        p.finalize(va);
        slots.push(va);
      }
    });
    assert.equal(p.insnPageCount, 2);
    assert.equal(slots[1] - slots[0], 16);
    assert.equal(cost.flips, 2, 'alloc_insn_page: one set_memory_rox per page');
    assert.equal(cost.pokes, 300, 'slots are written with text_poke');
    for (const va of slots) p.free(va);
    assert.equal(p.insnPageCount, 1);
    assert.equal(p.usage().mappedBytes, 4096);
    assert.equal(m.wxViolationCount(), 0);
  });
});
