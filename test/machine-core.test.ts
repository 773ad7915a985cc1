import assert from 'node:assert/strict';
import { test } from 'node:test';
import { archHex } from '../src/arch/types.js';
import { Rng } from '../src/base/rng.js';
import { createMachine } from '../src/machine/machine.js';
import { LEVEL_BYTES, PTE_GLOBAL, PTE_NX, PTE_PRESENT, PTE_RW, protToFlags } from '../src/machine/types.js';
import { assertWx, errCode, faultKind, GIB, modRange, snapshot } from './machine-helpers.js';

const PAGE = 4096;
const SZ_2M = 2 ** 21;

test('x86 boot: 1 GiB direct map, kernel image on 2 MiB leaves, read-only alias, W^X clean, accounting adds up', () => {
  const m = createMachine({ memoryBytes: 4 * GIB, cpus: 2, seed: 5 });
  const l = m.arch.layout;
  // The image alias made the first GiB 2 MiB-mapped; everything else is 1 GiB leaves.
  assert.deepEqual(m.directMapStats(), { bytes4k: 0, bytes2m: GIB, bytes1g: 3 * GIB });
  const text = m.kernelPt.walk(m.kernelTextStart);
  assert.ok(text !== null && text.level === 2);
  assert.equal(text.flags, PTE_PRESENT | PTE_GLOBAL, 'text is RX');
  const alias = m.kernelPt.walk(l.directMapStart + text.pfn * PAGE);
  assert.ok(alias !== null && alias.level === 2 && !(alias.flags & PTE_RW) && alias.flags & PTE_NX);
  const dataVa = m.kernelTextStart + l.kernelImage.textBytes + l.kernelImage.rodataBytes;
  assert.equal(m.kernelPt.walk(dataVa)?.flags, protToFlags('rw'));
  assert.equal(m.kernelPt.walk(dataVa - 1)?.flags, protToFlags('ro'));
  // KASLR: 2 MiB-aligned image below the module area; module start 1..1024 pages into it.
  assert.equal(m.kernelTextStart % SZ_2M, 0);
  assert.ok(m.kernelTextStart >= l.kernelImage.textStart);
  const off = (m.modulesStart - l.modulesKaslr.start) / PAGE;
  assert.ok(Number.isInteger(off) && off >= 1 && off <= 1024);
  assert.equal(
    createMachine({ memoryBytes: 4 * GIB, seed: 5 }).modulesStart,
    m.modulesStart,
    'deterministic',
  );
  const plain = createMachine({ memoryBytes: GIB, kaslr: false });
  assert.equal(plain.modulesStart, l.modules.start);
  assert.equal(plain.kernelTextStart, l.kernelImage.textStart);
  assertWx(m, 0);
  const a = m.frameAccounting();
  assert.equal(a.mappedFrames, (28 * 2 ** 20) / PAGE, 'the 28 MiB image');
  assert.equal(a.freeFrames + a.tableFrames + a.mappedFrames, a.totalFrames);
  m.checkConsistency();
  for (const k of Object.values(m.counters)) assert.equal(k, 0, 'counters start after boot');
  assert.equal(
    errCode(() => createMachine({ memoryBytes: GIB + PAGE })),
    'EINVAL',
  );
  assert.equal(
    errCode(() => createMachine({ cpus: 0 })),
    'EINVAL',
  );
});

test('arm64 and generic boot; the arm64 image is a busy area inside the module windows', () => {
  const arm = createMachine({ arch: 'arm64', memoryBytes: 2 * GIB, cpus: 2 });
  assert.equal(arm.pokingPt, null);
  const win = arm.arch.execmemRanges(arm.modulesStart, true).module_text;
  assert.ok(win !== undefined);
  assert.ok(arm.findArea(arm.kernelTextStart) !== undefined);
  // Allocating the whole direct window never overlaps the image.
  const got = [];
  for (let i = 0; i < 200; i++) {
    try {
      got.push(arm.vmalloc({ sizeBytes: SZ_2M, range: win.range, prot: 'rw' }));
    } catch (e) {
      assert.equal((e as { code: string }).code, 'ENOSPC');
      break;
    }
  }
  assert.ok(got.length > 40 && got.length < 64, `${got.length} 2 MiB areas fit beside the 38 MiB image`);
  for (const a of got) {
    assert.ok(a.va + a.reservedBytes <= arm.kernelTextStart || a.va >= arm.kernelTextStart + 38 * 2 ** 20);
  }
  assertWx(arm, 0);
  arm.checkConsistency();
  const gen = createMachine({ arch: 'generic', memoryBytes: GIB, cpus: 1 });
  assert.equal(gen.modulesStart, gen.arch.layout.modules.start, 'generic has no module KASLR');
  assertWx(gen, 0);
});

test('vmalloc: guard pages, alignment, huge leaves, first fit reuse after a purge', () => {
  const m = createMachine({ memoryBytes: 2 * GIB, cpus: 2 });
  const r = modRange(m);
  const a = m.vmalloc({ sizeBytes: 3 * PAGE, range: r, prot: 'rw' });
  const b = m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'rw', alignBytes: 16 * PAGE });
  assert.equal(a.reservedBytes, 4 * PAGE, 'one guard page');
  assert.equal(b.va % (16 * PAGE), 0);
  assert.ok(b.va >= a.va + a.reservedBytes);
  assert.equal(m.kernelPt.walk(a.va + 3 * PAGE), null, 'the guard page is unmapped');
  const h = m.vmalloc({ sizeBytes: 3 * 2 ** 20, range: r, prot: 'rw', allowHuge: true });
  assert.equal(h.leafBytes, SZ_2M);
  assert.equal(h.sizeBytes, 2 * SZ_2M, 'huge sizes round up to 2 MiB (__vmalloc_node_range)');
  assert.equal(h.va % SZ_2M, 0);
  assert.equal(m.kernelPt.walk(h.va + 5)?.level, 2);
  const small = m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'rw', allowHuge: true });
  assert.equal(small.leafBytes, PAGE, 'below 2 MiB stays on 4 KiB pages');
  assert.equal(m.findArea(a.va + 2 * PAGE + 17)?.va, a.va);
  assert.equal(m.findArea(a.va + 3 * PAGE), undefined, 'guard page belongs to no area');
  // Lazy vfree: no shootdown, VA not reused until the purge.
  const before = m.counters.shootdowns;
  m.vfree(a.va);
  assert.equal(m.counters.shootdowns, before);
  const c = m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'rw' });
  assert.notEqual(c.va, a.va);
  m.purgeLazy();
  assert.equal(m.counters.shootdowns, before + 1);
  const d = m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'rw' });
  assert.equal(d.va, a.va, 'first fit reuses the purged hole');
  for (const x of [b, h, small, c, d]) m.vfree(x.va);
  m.purgeLazy();
  assertWx(m, 0);
  m.checkConsistency();
});

test('aged memory: huge vmalloc falls back to 4 KiB leaves and counts it', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 1 });
  m.phys.age(1, new Rng(3));
  const h = m.vmalloc({ sizeBytes: SZ_2M, range: modRange(m), prot: 'rw', allowHuge: true });
  assert.equal(h.leafBytes, PAGE);
  assert.equal(m.counters.vmallocHugeFallbacks, 1);
  m.checkConsistency();
});

test('set_memory_ro on vmalloc pages splits the 1 GiB direct-map leaf; DirectMap stats move', () => {
  const m = createMachine({ memoryBytes: 4 * GIB, cpus: 4 });
  // Use up the first GiB (already split by the image alias) so new frames come from a 1 GiB leaf.
  const held: [number, number][] = [];
  for (let o = 0; o < 18; o++) while (m.phys.buddyInfo()[o] > 0) held.push([m.phys.allocPages(o), o]);
  const a = m.vmalloc({ sizeBytes: 2 * PAGE, range: modRange(m), prot: 'rw', flushResetPerms: true });
  assert.ok(a.leafPfns[0] >= 262144, 'frame from the second GiB');
  const dm0 = m.directMapStats();
  m.setMemory(a.va, 2, 'ro');
  assert.equal(m.counters.splitsDirectMap1G, 1);
  assert.equal(m.counters.splitsDirectMap2M, 1);
  assert.deepEqual(m.directMapStats(), {
    bytes4k: dm0.bytes4k + SZ_2M,
    bytes2m: dm0.bytes2m + GIB - SZ_2M,
    bytes1g: dm0.bytes1g - GIB,
  });
  // Each split ends in flush_tlb_all (__split_large_page), then cpa_flush flushes everything
  // (force_flush_all after the alias): three shootdowns, three IPIs each.
  assert.equal(m.counters.shootdowns, 3);
  assert.equal(m.counters.ipis, 9);
  assert.equal(m.counters.fullTlbFlushes, 3);
  const alias = m.kernelPt.walk(m.arch.layout.directMapStart + a.leafPfns[1] * PAGE);
  assert.deepEqual([alias?.level, alias?.flags], [1, protToFlags('ro')]);
  // The neighbour frame's alias stays writable.
  assert.equal(
    m.kernelPt.walk(m.arch.layout.directMapStart + (a.leafPfns[1] + 1) * PAGE)?.flags,
    protToFlags('rw'),
  );
  // set_memory_x does not touch the alias ("Directmap always has NX set").
  m.setMemory(a.va, 2, 'rox');
  assert.ok(m.kernelPt.walk(m.arch.layout.directMapStart + a.leafPfns[0] * PAGE)!.flags & PTE_NX);
  assertWx(m, 0);
  // vfree with VM_FLUSH_RESET_PERMS: the alias pages are already 4 KiB, so no split; one flush
  // (_vm_unmap_aliases); alias back to RW; no split undone (Linux keeps it split).
  const s = m.counters.shootdowns;
  m.vfree(a.va);
  assert.equal(m.counters.shootdowns, s + 1);
  assert.equal(
    m.kernelPt.walk(m.arch.layout.directMapStart + a.leafPfns[0] * PAGE)?.flags,
    protToFlags('rw'),
  );
  assert.equal(m.directMapStats().bytes4k, dm0.bytes4k + SZ_2M);
  assertWx(m, 0);
  for (const [pfn, o] of held) m.phys.freePages(pfn, o);
  m.checkConsistency();
});

test('CPA on a huge area: partial change splits, set_memory_rox collapses back to identical leaves (x86)', () => {
  const m = createMachine({ memoryBytes: 2 * GIB, cpus: 2 });
  const h = m.vmalloc({
    sizeBytes: SZ_2M,
    range: modRange(m),
    prot: 'rw',
    allowHuge: true,
    flushResetPerms: true,
  });
  m.setMemory(h.va, 512, 'rox');
  assert.equal(m.counters.splitsVmalloc2M, 0, 'a whole 2 MiB leaf changes in place');
  const range = { start: h.va, end: h.va + SZ_2M };
  const dumpRox = m.ptdump(range);
  assert.match(dumpRox, /2M +ro +PSE +GLB x {2}pmd/);
  const tables = m.frameAccounting().tableFrames;
  m.setMemory(h.va + 4 * PAGE, 1, 'rw');
  assert.equal(m.counters.splitsVmalloc2M, 1);
  assert.equal(m.kernelPt.walk(h.va)?.level, 1);
  assert.equal(m.kernelPt.walk(h.va + 4 * PAGE)?.flags, protToFlags('rw'));
  assert.equal(
    m.frameAccounting().tableFrames,
    tables + 2,
    'one PTE table in vmalloc, one in the direct map',
  );
  assertWx(m, 0);
  m.setMemory(h.va + 4 * PAGE, 1, 'rox');
  assert.equal(m.counters.collapsesVmalloc2M, 1);
  assert.equal(m.ptdump(range), dumpRox, 'collapse restores the original leaf');
  assert.equal(m.frameAccounting().tableFrames, tables + 1, 'direct-map alias stays split');
  // arm64 has no collapse.
  const arm = createMachine({ arch: 'arm64', memoryBytes: 2 * GIB, cpus: 2 });
  const ha = arm.vmalloc({ sizeBytes: SZ_2M, range: arm.arch.layout.vmalloc, prot: 'rox', allowHuge: true });
  arm.setMemory(ha.va, 1, 'rw');
  arm.setMemory(ha.va, 1, 'rox');
  assert.equal(arm.counters.collapsesVmalloc2M, 0);
  assert.equal(arm.kernelPt.walk(ha.va)?.level, 1);
});

test('stale TLB entries keep old permissions until flushed; a skipped flush is a W^X violation', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 2 });
  const dm = m.arch.layout.directMapStart;
  const a = m.vmalloc({ sizeBytes: PAGE, range: modRange(m), prot: 'rw', flushResetPerms: true });
  m.setMemory(a.va, 1, 'ro'); // splits the alias down to a 4K leaf
  m.setMemory(a.va, 1, 'rw');
  m.store(1, a.va, Uint8Array.of(1)); // cpu1 caches the RW translation
  // Change the PTE behind the CPUs' back: read-only, no flush.
  m.kernelPt.setLeafFlags(a.va, 1, protToFlags('ro'));
  m.store(1, a.va, Uint8Array.of(2));
  assert.equal(
    faultKind(() => m.store(0, a.va, Uint8Array.of(3))),
    'write-protect',
    'cpu0 walks the new PTE',
  );
  assertWx(m, 0);
  // Make it ROX with its alias RO, still without a flush: cpu1's stale RW entry is a violation.
  m.kernelPt.setLeafFlags(a.va, 1, protToFlags('rox'));
  m.kernelPt.setLeafFlags(dm + a.leafPfns[0] * PAGE, 1, protToFlags('ro'));
  assertWx(m, 1);
  assert.equal(m.wxFullScan()[0].pfn, a.leafPfns[0]);
  m.store(1, a.va, Uint8Array.of(4)); // still writable through the stale entry
  m.flushLocal(0);
  assertWx(m, 1);
  m.flushLocal(1, a.va, PAGE);
  assertWx(m, 0);
  assert.equal(
    faultKind(() => m.store(1, a.va, Uint8Array.of(5))),
    'write-protect',
  );
  assert.deepEqual(m.load(0, a.va, 1), Uint8Array.of(4));
  assert.equal(m.counters.localFlushes, 2);
});

test('stale 2 MiB and 1 GiB TLB entries are found through the per-CPU cache filter', () => {
  const m = createMachine({ memoryBytes: 2 * GIB, cpus: 3 });
  const dm = m.arch.layout.directMapStart;
  // 2 MiB: cpu1 caches an RW 2 MiB leaf; the leaf turns ROX behind its back (alias already RO).
  // cpu2 has cached something else only, cpu0 nothing.
  const h = m.vmalloc({ sizeBytes: SZ_2M, range: m.arch.layout.vmalloc, prot: 'rw', allowHuge: true });
  assert.equal(h.leafBytes, SZ_2M);
  m.setMemory(h.va, 512, 'ro');
  m.kernelPt.setLeafFlags(h.va, 2, protToFlags('rw'));
  m.load(1, h.va + 7 * PAGE, 1);
  m.load(2, dm + 100 * PAGE, 1);
  m.kernelPt.setLeafFlags(h.va, 2, protToFlags('rox'));
  assertWx(m, 512);
  assert.equal(m.staleTlbEntryCount(), 1, 'only cpu1 holds the old leaf');
  m.flushLocal(1, h.va, SZ_2M);
  assertWx(m, 0);
  // 1 GiB: cpu0 caches the second GiB's direct-map leaf (RW); it is split behind its back and a
  // frame of it is mapped executable while its own alias page is made read-only.
  const g = dm + GIB;
  assert.equal(m.kernelPt.walk(g)?.level, 3);
  m.load(0, g + 3 * SZ_2M, 1);
  m.kernelPt.split(g, 3);
  assert.equal(m.staleTlbEntryCount(), 1, 'the old 1 GiB leaf on cpu0, at once');
  m.kernelPt.split(g, 2);
  const pfn = GIB / PAGE;
  m.kernelPt.setLeafFlags(g, 1, protToFlags('ro'));
  assertWx(m, 0);
  assert.equal(m.staleTlbEntryCount(), 1, 'the old 1 GiB leaf on cpu0');
  const x = m.arch.layout.vmalloc.end - 16 * SZ_2M;
  m.kernelPt.mapLeaf(x, 1, pfn, protToFlags('rox'));
  assertWx(m, 1);
  assert.deepEqual(m.wxFullScan()[0].writableVia, [g]);
  m.flushLocal(0);
  assertWx(m, 0);
  m.kernelPt.unmapLeaf(x, 1);
  assertWx(m, 0);
  // A collapse under a cached piece: cpu2's 4 KiB entry goes stale when the 512 pieces become
  // one 2 MiB leaf again (the W^X counts of pieces and leaf cancel; only the stale copy adds).
  m.kernelPt.setLeafFlags(g, 1, protToFlags('rw'));
  m.load(2, g + 9 * PAGE, 1);
  assert.equal(m.staleTlbEntryCount(), 0);
  assert.ok(m.kernelPt.tryCollapse(g, 2));
  assert.equal(m.staleTlbEntryCount(), 1);
  assertWx(m, 0);
  m.flushLocal(2, g + 9 * PAGE, PAGE);
  assert.equal(m.staleTlbEntryCount(), 0);
});

test('deliberate W+X mappings are reported by both audits', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 2 });
  const r = modRange(m);
  const rwx = m.vmalloc({ sizeBytes: 3 * PAGE, range: r, prot: 'rwx' });
  assertWx(m, 3);
  // ROX mapped directly leaves the direct-map alias writable: also a violation (on Linux too).
  const rox = m.vmalloc({ sizeBytes: 2 * PAGE, range: r, prot: 'rox' });
  assertWx(m, 5);
  const v = m.wxFullScan().find((x) => x.pfn === rox.leafPfns[0]);
  assert.deepEqual(v?.executableVia, [rox.va]);
  assert.deepEqual(v?.writableVia, [
    m.arch.layout.directMapStart + Math.floor(rox.leafPfns[0] / 512) * 512 * PAGE,
  ]);
  m.setMemory(rox.va, 2, 'rox'); // now the alias goes RO
  assertWx(m, 3);
  m.vfree(rwx.va);
  assertWx(m, 0);
});

test('fetch/ifetch: NX and trap faults, counted TLB statistics, micro-cache invalidated by flips', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 2 });
  const a = m.vmalloc({ sizeBytes: 2 * PAGE, range: modRange(m), prot: 'rw', flushResetPerms: true });
  const code = new Uint8Array(2 * PAGE).fill(0x90);
  code[100] = 0xcc;
  m.store(0, a.va, code);
  assert.equal(
    faultKind(() => m.ifetch(0, a.va)),
    'nx',
  );
  m.setMemory(a.va, 2, 'rox');
  const st = m.tlbs[1].stats.i;
  const before = st.l1Hits + st.l2Hits + st.misses;
  let sum = 0;
  for (let i = 0; i < 10000; i++) sum += m.ifetch(1, a.va + (i % (2 * PAGE)));
  assert.equal(sum, 9998 * 0x90 + 2 * 0xcc);
  assert.equal(st.l1Hits + st.l2Hits + st.misses - before, 10000, 'every fetch is counted once');
  assert.equal(
    faultKind(() => m.fetch(1, a.va + 100, 1)),
    'trap',
  );
  assert.deepEqual(m.fetch(1, a.va + 101, 2), Uint8Array.of(0x90, 0x90));
  m.poke(0, a.va + 50, Uint8Array.of(0xc3));
  assert.equal(m.ifetch(1, a.va + 50), 0xc3, 'poked bytes are visible to fetches');
  m.setMemory(a.va, 1, 'rw');
  assert.equal(
    faultKind(() => m.ifetch(1, a.va)),
    'nx',
    'micro-cache did not survive the flip',
  );
  assert.equal(
    faultKind(() => m.load(0, m.modulesStart - PAGE, 1)),
    'not-present',
  );
  assert.equal(
    errCode(() => m.ifetch(2, a.va)),
    'EINVAL',
  );
  assert.equal(
    errCode(() => m.load(0, a.va, 0)),
    'EINVAL',
  );
  assert.equal(
    errCode(() => m.flushLocal(0, a.va)),
    'EINVAL',
  );
  assertWx(m, 0);
});

test('x86 text_poke: 2-page steps through poking_mm, local flushes only, target stays ROX, audit stays 0', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 4 });
  const a = m.vmalloc({ sizeBytes: 4 * PAGE, range: modRange(m), prot: 'rw', flushResetPerms: true });
  m.setMemory(a.va, 4, 'rox');
  const c0 = { ...m.counters };
  const bytes = new Uint8Array(9000).map((_, i) => i & 0xff);
  m.poke(2, a.va + 100, bytes);
  assert.equal(m.counters.pokeSteps - c0.pokeSteps, 2, 'min(2*PAGE - offset, remaining) chunks');
  assert.equal(m.counters.localFlushes - c0.localFlushes, 2);
  assert.equal(m.counters.shootdowns, c0.shootdowns);
  assert.equal(m.counters.ipis, c0.ipis);
  assert.equal(m.counters.pokeBytes - c0.pokeBytes, 9000);
  assert.deepEqual(m.load(0, a.va + 100, 9000), bytes);
  assert.equal(m.kernelPt.walk(a.va)?.flags, protToFlags('rox'));
  assertWx(m, 0);
  const leaves: unknown[] = [];
  m.pokingPt?.forEachLeaf(0, 2 ** 48, (t) => leaves.push(t));
  assert.deepEqual(leaves, [], 'poking_mm is empty again');
  m.pokeSet(3, a.va + PAGE - 2, 5, Uint8Array.of(0xcc));
  assert.deepEqual(
    m.load(0, a.va + PAGE - 3, 7),
    Uint8Array.of(bytes[PAGE - 103], 0xcc, 0xcc, 0xcc, 0xcc, 0xcc, bytes[PAGE - 97]),
  );
  const snap = snapshot(m);
  assert.equal(
    errCode(() => m.poke(0, m.kernelTextStart, Uint8Array.of(1))),
    'EINVAL',
    'core kernel text',
  );
  assert.equal(
    errCode(() => m.poke(0, a.va + 4 * PAGE - 1, Uint8Array.of(1, 2))),
    'EINVAL',
    'crosses the area end',
  );
  assert.equal(
    errCode(() => m.poke(0, a.va + 4 * PAGE, Uint8Array.of(1))),
    'ENOENT',
    'guard page',
  );
  assert.equal(
    errCode(() => m.poke(0, a.va, new Uint8Array(0))),
    'EINVAL',
  );
  assert.equal(
    errCode(() => m.poke(9, a.va, Uint8Array.of(1))),
    'EINVAL',
  );
  assert.equal(
    errCode(() => m.pokeSet(0, a.va, 4, new Uint8Array(0))),
    'EINVAL',
  );
  assert.equal(snapshot(m), snap);
});

test('arm64 fixmap patching: page steps, broadcast TLBI without IPIs, one I-cache flush; generic: ENOTSUP', () => {
  const m = createMachine({ arch: 'arm64', memoryBytes: GIB, cpus: 4 });
  const a = m.vmalloc({
    sizeBytes: 3 * PAGE,
    range: m.arch.layout.vmalloc,
    prot: 'rw',
    flushResetPerms: true,
  });
  m.setMemory(a.va, 3, 'rox');
  const c0 = { ...m.counters };
  m.pokeSet(1, a.va + 8, 2 * PAGE, m.arch.trapPattern);
  assert.equal(m.counters.pokeSteps - c0.pokeSteps, 3);
  assert.equal(m.counters.broadcastFlushes - c0.broadcastFlushes, 3);
  assert.equal(m.counters.ipis, c0.ipis);
  assert.equal(m.counters.shootdowns, c0.shootdowns, 'broadcast TLBI is not an IPI shootdown');
  assert.equal(m.counters.icacheFlushes - c0.icacheFlushes, 1);
  assert.equal(
    faultKind(() => m.fetch(0, a.va + 8 + 4 * 100, 4)),
    'trap',
  );
  assert.equal(m.kernelPt.walk(m.arch.layout.pokeArea.start), null, 'fixmap slot cleared');
  assertWx(m, 0);
  m.checkConsistency();
  const g = createMachine({ arch: 'generic', memoryBytes: GIB, cpus: 1 });
  const b = g.vmalloc({ sizeBytes: PAGE, range: g.arch.layout.vmalloc, prot: 'rw' });
  assert.equal(
    errCode(() => g.poke(0, b.va, Uint8Array.of(1))),
    'ENOTSUP',
  );
});

test('bad inputs give typed errors and change nothing', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 2 });
  const r = modRange(m);
  const a = m.vmalloc({ sizeBytes: 2 * PAGE, range: r, prot: 'rw' });
  const snap = snapshot(m);
  const cases: [string, () => unknown][] = [
    ['EINVAL', () => m.vmalloc({ sizeBytes: 0, range: r, prot: 'rw' })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: 100, range: r, prot: 'rw' })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: -PAGE, range: r, prot: 'rw' })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'rw', alignBytes: 3 * PAGE })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: PAGE, range: { start: 0, end: GIB }, prot: 'rw' })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: PAGE, range: { start: r.end, end: r.start }, prot: 'rw' })],
    ['EINVAL', () => m.vmalloc({ sizeBytes: PAGE, range: r, prot: 'none' })],
    ['ENOSPC', () => m.vmalloc({ sizeBytes: 4 * GIB, range: r, prot: 'rw' })],
    ['ENOMEM', () => m.vmalloc({ sizeBytes: GIB, range: m.arch.layout.vmalloc, prot: 'rw' })],
    ['ENOENT', () => m.vfree(a.va + PAGE)],
    ['ENOENT', () => m.vfree(12345)],
    ['EINVAL', () => m.vfree(m.kernelTextStart)],
    ['EINVAL', () => m.setMemory(a.va + 1, 1, 'ro')],
    ['EINVAL', () => m.setMemory(a.va, 0, 'ro')],
    ['EINVAL', () => m.setMemory(a.va, 1.5, 'ro')],
    ['EINVAL', () => m.setMemory(a.va, 1, 'none')],
    ['ENOENT', () => m.setMemory(a.va, 3, 'ro')],
    ['ENOENT', () => m.setMemory(r.start - PAGE, 1, 'ro')],
    ['EINVAL', () => m.flushLocal(-1)],
    ['EINVAL', () => m.store(0, -1, Uint8Array.of(1))],
  ];
  for (const [want, fn] of cases) {
    assert.equal(errCode(fn), want, fn.toString());
    assert.equal(snapshot(m), snap, `state changed by ${fn.toString()}`);
  }
  // The error names the first unmapped address (here the guard page after a's two pages).
  assert.throws(
    () => m.setMemory(a.va, 3, 'ro'),
    (e: Error) => e.message.includes(`0x${(a.va + 2 * PAGE).toString(16)} is not mapped`),
  );
  // A store running into the guard page faults before writing anything.
  assert.equal(
    faultKind(() => m.store(0, a.va + 2 * PAGE - 1, Uint8Array.of(1, 2))),
    'not-present',
  );
  assert.deepEqual(m.load(0, a.va + 2 * PAGE - 1, 1), Uint8Array.of(0));
});

test('fault injection at every physical allocation of a vmalloc (and a CPA split) leaves no trace', () => {
  for (const arch of ['x86_64', 'arm64'] as const) {
    const m = createMachine({ arch, memoryBytes: GIB, cpus: 2 });
    const range = arch === 'x86_64' ? modRange(m) : m.arch.layout.vmalloc;
    // Place the request so that it needs new PMD and PTE tables.
    const req = { sizeBytes: 40 * PAGE, range, prot: 'rw' as const, flushResetPerms: true };
    const base = m.phys.allocCount(0);
    const probe = m.vmalloc(req);
    const k = m.phys.allocCount(0) - base;
    assert.ok(k > 40, `${k} order-0 allocations (40 pages + page tables)`);
    m.vfree(probe.va);
    const snap = snapshot(m);
    for (let nth = 1; nth <= k; nth++) {
      m.phys.injectFailure(0, nth);
      assert.equal(
        errCode(() => m.vmalloc(req)),
        'ENOMEM',
        `nth=${nth}`,
      );
      assert.equal(snapshot(m), snap, `${arch}: injected failure #${nth} left a trace`);
    }
    m.phys.clearInjectedFailures();
    m.checkConsistency();
    // CPA: the split needs a table frame; failing it undoes the partial work. x86 needs two (the
    // vmalloc leaf and its direct-map alias); arm64 one (its linear map is 4 KiB pages from boot).
    const h = m.vmalloc({ ...req, sizeBytes: SZ_2M, allowHuge: true });
    const snap2 = snapshot(m);
    for (let nth = 1; nth <= (arch === 'x86_64' ? 2 : 1); nth++) {
      m.phys.injectFailure(0, nth);
      assert.equal(
        errCode(() => m.setMemory(h.va + PAGE, 1, 'ro')),
        'ENOMEM',
      );
      assert.equal(snapshot(m), snap2, `${arch}: failed CPA #${nth} left a trace`);
    }
    m.phys.clearInjectedFailures();
    // Huge allocation failing at order 9: fallback to 4 KiB, counted.
    m.phys.injectFailure(9, 1);
    const f = m.vmalloc({ ...req, sizeBytes: SZ_2M, allowHuge: true });
    assert.equal(f.leafBytes, PAGE);
    assert.equal(m.counters.vmallocHugeFallbacks, 1);
    assertWx(m, 0);
    m.checkConsistency();
  }
});

test('ptdump reads like /sys/kernel/debug/page_tables/kernel', () => {
  const m = createMachine({ memoryBytes: GIB, cpus: 1, kaslr: false });
  const a = m.vmalloc({ sizeBytes: 2 * PAGE, range: modRange(m), prot: 'rw' });
  m.setMemory(a.va, 2, 'rox');
  const dump = m.ptdump();
  const lines = dump.trim().split('\n');
  assert.ok(lines.includes('---[ Modules ]---'));
  assert.ok(lines.includes('---[ High Kernel Mapping ]---'));
  assert.ok(
    lines.includes('0xffffffffa0000000-0xffffffffa0002000           8K     ro                 GLB x  pte'),
  );
  assert.ok(
    lines.includes('0xffffffff81000000-0xffffffff82000000          16M     ro         PSE     GLB x  pmd'),
  );
  for (const line of lines) {
    assert.match(
      line,
      // printk_prot() of arch/x86/mm/dump_pagetables.c: USR RW PWT PCD PSE PAT GLB NX level.
      /^(---\[ .+ \]---|0x[0-9a-f]{16}-0x[0-9a-f]{16} {3} *\d+[BKMG] {5}(RW|ro) {9}(PSE| {3}) {5}(GLB| {3}) (x |NX) (pte|pmd|pud))$/,
    );
  }
  const part = m.ptdump({ start: a.va, end: a.va + PAGE });
  assert.equal(
    part,
    `---[ Modules ]---\n${archHex(m.arch, a.va)}-${archHex(m.arch, a.va + PAGE)}           4K     ro                 GLB x  pte\n`,
  );
  assert.equal(LEVEL_BYTES[1], PAGE);
  assert.ok(!dump.includes(`\n${archHex(m.arch, a.va + 2 * PAGE)}-`), 'guard page not printed');
});
