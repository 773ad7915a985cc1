/**
 * Unit tests of the execmem allocator on the fake backend: TLSF heap mechanics, the range
 * table, protections per type, the update helper (alias and unprotect/write/protect), batching,
 * seal, shrink hysteresis, 4 KiB fallback accounting, large objects and atomic context.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ARCHES, archToBig, type ExecmemType } from '../src/arch/index.js';
import { SZ_2M, SZ_4K } from '../src/base/addr.js';
import {
  BLOCK_BYTES,
  Execmem,
  LARGE_TIER_FROM_BYTES,
  RELEASE_DELAY_CALLS,
  SMALL_OBJECT_BYTES,
  SPLIT_MIN_BLOCKS,
} from '../src/execmem/execmem.js';
import { Heap, LARGE, SMALL } from '../src/execmem/heap.js';
import { SMALL_TIER_BLOCK_BYTES } from '../src/execmem/limits.js';
import { buildRangeTable } from '../src/execmem/ranges.js';
import { formatStats } from '../src/execmem/stats.js';
import { execmemErrorCode } from './helpers/execmem-error.js';
import { FakeBackend } from './helpers/fake-backend.js';

function setup(arch: 'x86_64' | 'arm64' | 'generic' = 'x86_64', opts: { granuleBytes?: 16 | 64 } = {}) {
  const fb = new FakeBackend(ARCHES[arch]);
  const em = new Execmem(fb, { seed: 7, ...opts });
  return { fb, em };
}

test('heap: alloc, free and immediate coalescing keep one free run per empty block', () => {
  const h = new Heap(16, SZ_2M, 4);
  h.addBlock();
  const a = h.alloc(3, 1, 0);
  const b = h.alloc(5, 1, 0);
  const c = h.alloc(7, 1, 0);
  assert.deepEqual(
    [a, b, c].map((n) => h.granuleOfNode(n)),
    [0, 3, 8],
  );
  h.audit();
  h.free(0, h.granuleOfNode(b));
  h.audit();
  assert.equal(h.usedRunCovering(0, 5), -1, 'an interior granule of a free run is free space');
  assert.equal(h.startOf(h.usedRunCovering(0, 12)), 8, 'an interior granule of a used run finds its start');
  h.free(0, h.granuleOfNode(a));
  h.free(0, h.granuleOfNode(c));
  h.audit();
  assert.equal(h.freeGranules, h.blockGranules);
  assert.ok(h.isBlockEmpty(0));
  assert.equal(h.largestFreeGranules(), h.blockGranules);
});

test('heap: interior look-ups stay right across spans, frees and reuse (stale owner entries)', () => {
  const h = new Heap(64, SZ_2M, 1);
  h.addBlock();
  const big = h.alloc(1000, 1, 0); // spans many owner spans
  for (const g of [0, 1, 63, 64, 65, 500, 999]) assert.equal(h.startOf(h.usedRunCovering(0, g)), 0);
  assert.equal(h.usedRunCovering(0, 1000), -1);
  h.free(0, h.granuleOfNode(big));
  const small = h.alloc(10, 1, 0);
  const other = h.alloc(5, 64, 0); // starts at granule 64, inside the old big run
  assert.equal(h.granuleOfNode(small), 0);
  assert.equal(h.granuleOfNode(other), 64);
  assert.equal(h.startOf(h.usedRunCovering(0, 9)), 0);
  assert.equal(h.usedRunCovering(0, 10), -1, 'the stale owner of span 0 (the freed big run) is not believed');
  assert.equal(h.usedRunCovering(0, 500), -1);
  assert.equal(h.startOf(h.usedRunCovering(0, 68)), 64);
  assert.equal(h.usedRunCovering(0, 69), -1);
  h.audit();
});

test('heap: aligned allocation leaves the lead gap free and allocatable', () => {
  const h = new Heap(16, SZ_2M, 1);
  h.addBlock();
  h.alloc(1, 1, 0); // granule 0
  const n = h.alloc(4, 256, 0); // 4096-byte alignment at 16-byte granules
  assert.equal(h.granuleOfNode(n) % 256, 0);
  h.audit();
  const small = h.alloc(1, 1, 0);
  assert.ok(h.granuleOfNode(small) < 256, 'the lead gap is reused');
  h.audit();
});

test('heap: a full block returns -1, and a second block serves the rest', () => {
  const h = new Heap(4096, SZ_2M, 2);
  h.addBlock();
  assert.ok(h.alloc(512, 1, 0) >= 0);
  assert.equal(h.alloc(1, 1, 0), -1);
  h.addBlock();
  assert.equal(h.slotOfNode(h.alloc(1, 1, 0)), 1);
  h.audit();
});

test('heap block classes: small requests fill SMALL blocks, spill into LARGE holes, never the reverse', () => {
  const h = new Heap(64, SZ_2M, 4, 32); // small: fewer than 32 granules (2 KiB)
  assert.equal(h.classFor(31), SMALL);
  assert.equal(h.classFor(32), LARGE);
  assert.equal(h.alloc(4, 1, 0), -1, 'no block yet');
  const s0 = h.addBlock(SMALL);
  const l0 = h.addBlock(LARGE);
  const a = h.alloc(16, 1, 0);
  assert.equal(h.slotOfNode(a), s0, 'a small request goes to the SMALL block');
  const b = h.alloc(100, 1, 0);
  assert.equal(h.slotOfNode(b), l0, 'a large request goes to the LARGE block');
  // Fill the SMALL block completely with small runs: the next small request spills into LARGE.
  const rest = h.blockGranules - 16;
  for (let i = 0; i < rest / 16; i++) assert.equal(h.slotOfNode(h.alloc(16, 1, 0)), s0);
  assert.equal(h.freeGranules, h.blockGranules - 100, 'SMALL block full');
  const spill = h.alloc(8, 1, 0);
  assert.equal(h.slotOfNode(spill), l0, 'small spills into the LARGE block');
  // Free two adjacent runs in the SMALL block (a 32-granule hole): a large request of 32
  // granules fits there but must not take it; a small one takes it before the LARGE block.
  h.free(s0, 0);
  h.free(s0, 16);
  const big = h.alloc(32, 1, 0);
  assert.equal(h.slotOfNode(big), l0, 'a large request never lands in a SMALL block');
  const back = h.alloc(8, 1, 0);
  assert.equal(h.slotOfNode(back), s0, 'small requests prefer the SMALL block again');
  h.audit();
});

test('heap block classes: an empty block of the other class is re-classed instead of needing a new one', () => {
  const h = new Heap(64, SZ_2M, 2, 32);
  const s0 = h.addBlock(SMALL);
  const l0 = h.addBlock(LARGE);
  const x = h.alloc(h.blockGranules, 1, 0); // fills the LARGE block
  assert.equal(h.slotOfNode(x), l0);
  assert.equal(h.classOfBlock(s0), SMALL);
  const y = h.alloc(64, 1, 0); // LARGE request, only the empty SMALL block is free
  assert.equal(h.slotOfNode(y), s0);
  assert.equal(h.classOfBlock(s0), LARGE, 'the empty SMALL block became LARGE');
  h.audit();
  // With no SMALL block at all, a small request does not spill into LARGE holes: it re-classes
  // an empty block (here both are empty) so the split re-forms.
  h.free(l0, 0);
  h.free(s0, 0);
  const z = h.alloc(1, 1, 0);
  assert.equal(h.classOfBlock(h.slotOfNode(z)), SMALL);
  h.audit();
  // A non-empty block is never re-classed: a large request that fits nowhere returns -1.
  const w = h.alloc(h.blockGranules, 1, 0); // takes the other (LARGE) block whole
  assert.ok(w >= 0);
  assert.equal(h.alloc(40, 1, 0), -1, 'the SMALL block has room but holds a live run');
  h.audit();
});

test('heap block classes: random alloc/free keeps the class rule and every structure consistent', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 1024 }), fc.nat()), { maxLength: 120 }),
      (steps) => {
        const h = new Heap(64, 64 * 1024, 5, 8); // 1024-granule blocks, small: < 8 granules
        const live: number[] = [];
        for (const [doAlloc, n, pick] of steps) {
          if (doAlloc || live.length === 0) {
            let node = h.alloc(n, 1, 0);
            if (node < 0 && h.hasFreeSlot()) {
              h.addBlock(h.classFor(n));
              node = h.alloc(n, 1, 0);
              assert.ok(node >= 0, 'a fresh block serves any request of at most one block');
            }
            if (node >= 0) live.push(node);
          } else {
            const node = live.splice(pick % live.length, 1)[0];
            h.free(h.slotOfNode(node), h.granuleOfNode(node));
          }
          h.audit();
          for (const node of live) {
            const slot = h.slotOfNode(node);
            const len = h.tagAt(slot, h.granuleOfNode(node));
            assert.ok(len > 0, 'live run is used');
            if (len >= 8) assert.equal(h.classOfBlock(slot), LARGE, 'a large run sits in a LARGE block');
          }
        }
      },
    ),
    { numRuns: 150, seed: 0xb10c },
  );
});

test('Execmem: the split starts at SPLIT_MIN_BLOCKS blocks; smallObjectBytes 0 turns it off; bad values are EINVAL', () => {
  const nearlyBlock = SZ_2M - 64;
  for (const [small, expectSmallBlocks] of [
    [SMALL_OBJECT_BYTES, 1],
    [0, 0],
  ] as const) {
    const em = new Execmem(new FakeBackend(ARCHES.x86_64, { storeBytes: false }), {
      seed: 7,
      smallObjectBytes: small,
    });
    assert.equal(em.smallObjectBytes, small);
    em.alloc('bpf', 100); // before the split: shares the first block
    for (let i = 1; i < SPLIT_MIN_BLOCKS; i++) em.alloc('bpf', nearlyBlock);
    const pool = () => em.stats().pools['kprobes+ftrace+bpf'];
    assert.equal(pool().blocks, SPLIT_MIN_BLOCKS);
    assert.equal(pool().smallObjectBlocks, 0, 'no small-object block below SPLIT_MIN_BLOCKS');
    em.alloc('bpf', 200); // the split is on (when enabled): the first SMALL block is mapped
    assert.equal(pool().smallObjectBlocks, expectSmallBlocks);
    em.audit();
  }
  for (const bad of [-1, 1.5, SZ_2M, Number.NaN]) {
    assert.equal(
      execmemErrorCode(() => new Execmem(new FakeBackend(ARCHES.x86_64), { smallObjectBytes: bad })),
      'EINVAL',
    );
  }
});

test('range table: every type has a range; missing types inherit module_text; data never executable', () => {
  for (const arch of Object.values(ARCHES)) {
    const t = buildRangeTable(arch, true, 1);
    for (const [type, r] of Object.entries(t)) {
      assert.ok(r.range.end > r.range.start, `${arch.name} ${type}`);
      if (type === 'module_data' || type === 'module_rodata' || type === 'module_ro_after_init') {
        assert.ok(r.prot === 'rw' || r.prot === 'ro', `${arch.name} ${type} is not executable`);
      } else assert.equal(r.prot, 'rox');
    }
    assert.equal(t.module_rodata.inherited, true);
    assert.deepEqual(t.module_rodata.range, t.module_text.range);
  }
  const x =
    buildRangeTable(ARCHES.x86_64, true, 1).module_text.range.start - ARCHES.x86_64.layout.modulesKaslr.start;
  assert.ok(x >= SZ_4K && x <= 1024 * SZ_4K && x % SZ_4K === 0, 'x86 KASLR offset is 1..1024 pages');
  const y =
    buildRangeTable(ARCHES.x86_64, true, 2).module_text.range.start - ARCHES.x86_64.layout.modulesKaslr.start;
  assert.notEqual(x, y, 'the offset depends on the seed');
  assert.equal(
    buildRangeTable(ARCHES.x86_64, false, 1).module_text.range.start,
    ARCHES.x86_64.layout.modules.start,
  );
});

test('range table: a module start the backend reports wins over the seeded draw; without one, the seed decides', () => {
  const x86 = ARCHES.x86_64;
  const platform = x86.layout.modulesKaslr.start + 77 * SZ_4K;
  for (const seed of [1, 2, 3]) {
    const em = new Execmem(new FakeBackend(x86, { modulesStart: platform }), { seed });
    assert.equal(em.ranges.module_text.range.start, platform, `seed ${seed}: the platform's start`);
    assert.equal(em.ranges.bpf.range.start, platform);
    const va = em.allocVa('bpf', 100);
    assert.ok(va >= platform, 'blocks at or above the platform module start');
  }
  const seeded = new Execmem(new FakeBackend(x86), { seed: 2 });
  assert.equal(seeded.ranges.module_text.range.start, buildRangeTable(x86, true, 2).module_text.range.start);
  assert.notEqual(seeded.ranges.module_text.range.start, platform);
  assert.throws(() => buildRangeTable(x86, true, 1, platform + 1), /not a page/);
  assert.throws(() => buildRangeTable(x86, true, 1, x86.layout.modules.end), /not a page/);
});

test('text allocations are ROX, trap-filled, in range, and handed out without a flip', () => {
  const { fb, em } = setup();
  const first = em.allocVa('bpf', 300);
  const flipsAfterFirstBlock = fb.counters().permissionFlips;
  assert.equal(flipsAfterFirstBlock, 1, 'one flip: the new block made ROX once');
  const vas = [first];
  for (let i = 0; i < 200; i++) vas.push(em.allocVa('bpf', 100 + i * 7));
  assert.equal(fb.counters().permissionFlips, flipsAfterFirstBlock, 'no flip per allocation');
  const r = em.ranges.bpf.range;
  for (const va of vas) {
    assert.equal(fb.protAt(va), 'rox');
    assert.ok(va >= r.start && va < r.end);
    assert.ok(fb.peek(va, 64).every((b) => b === 0xcc));
  }
  assert.equal(fb.wxViolationCount(), 0);
  assert.equal(typeof em.alloc('bpf', 10), 'bigint');
});

test('update on an alias arch pokes; free re-fills with traps through the alias, no flip', () => {
  const { fb, em } = setup('x86_64');
  const va = em.allocVa('bpf', 256);
  const code1 = Uint8Array.from({ length: 256 }, (_, i) => i);
  const flips = fb.counters().permissionFlips;
  em.updateVa(va, code1);
  assert.deepEqual(em.readVa(va, 256), code1);
  assert.equal(fb.protAt(va), 'rox');
  em.freeVa(va);
  assert.ok(
    fb.peek(va, 256).every((b) => b === 0xcc),
    'freed text is trap-filled',
  );
  assert.equal(fb.counters().permissionFlips, flips, 'neither update nor free flipped permissions');
  assert.equal(em.stats().counters.pokes, 2);
});

test('update on generic (no alias) flips the whole block twice; batch flips once each way', () => {
  const { fb, em } = setup('generic');
  const vas = Array.from({ length: 10 }, () => em.allocVa('bpf', 200));
  let flips = fb.counters().permissionFlips;
  em.updateVa(vas[0], new Uint8Array(200).fill(1));
  assert.equal(fb.counters().permissionFlips - flips, 2);
  assert.equal(fb.protAt(vas[0]), 'rox');
  flips = fb.counters().permissionFlips;
  em.batch(() => {
    for (const va of vas) em.updateVa(va, new Uint8Array(200).fill(2));
    em.freeVa(vas[9]);
    assert.equal(fb.protAt(vas[0]), 'rw', 'inside the batch the block is RW and not executable');
  });
  assert.equal(fb.counters().permissionFlips - flips, 2, 'ten updates and a free in one batch: two flips');
  assert.equal(fb.protAt(vas[0]), 'rox');
  assert.deepEqual(em.readVa(vas[3], 4), Uint8Array.of(2, 2, 2, 2));
  assert.ok(
    fb.peek(vas[9], 200).every((b) => b === 0),
    'generic trap pattern is four zero bytes',
  );
  assert.equal(fb.wxViolationCount(), 0);
  assert.equal(fb.counters().pokes, 0, 'generic never uses an alias write');
});

test('data types: module_data plain RW+NX, rodata RO written via the helper, ro_after_init sealed page-granular', () => {
  const { fb, em } = setup('x86_64');
  const d = em.allocVa('module_data', 100);
  assert.equal(fb.protAt(d), 'rw');
  em.updateVa(d, Uint8Array.of(9));
  const pokes = fb.counters().pokes;
  const ro = em.allocVa('module_rodata', 100);
  assert.equal(fb.protAt(ro), 'ro');
  em.updateVa(ro, Uint8Array.of(5));
  assert.equal(fb.counters().pokes, pokes + 1, 'rodata goes through the alias write');
  const rai = em.allocVa('module_ro_after_init', 100);
  assert.equal(rai % SZ_4K, 0, 'ro_after_init is page aligned');
  assert.equal(em.sizeOfVa(rai), 100, 'sizeOf is the requested size');
  assert.equal(em.stats().types.module_ro_after_init.liveBytes, SZ_4K, 'it occupies a whole page');
  const rai2 = em.allocVa('module_ro_after_init', 5000);
  em.updateVa(rai, Uint8Array.of(1, 2, 3));
  em.sealVa(rai);
  assert.equal(fb.protAt(rai), 'ro');
  assert.equal(fb.protAt(rai2), 'rw', 'the neighbour page stays RW');
  assert.equal(
    execmemErrorCode(() => em.updateVa(rai, Uint8Array.of(1))),
    'EPERM',
  );
  assert.equal(
    execmemErrorCode(() => em.sealVa(rai)),
    'EPERM',
  );
  assert.equal(
    execmemErrorCode(() => em.sealVa(d)),
    'EPERM',
  );
  em.freeVa(rai);
  assert.equal(fb.protAt(rai), 'rw', 'freeing sealed memory makes it RW again for reuse');
  assert.ok(fb.peek(rai, SZ_4K).every((b) => b === 0));
  assert.ok(em.ranges.module_data.prot === 'rw' && fb.wxViolationCount() === 0);
});

test('text and data never share a block; bpf+kprobes+ftrace share one pool by default', () => {
  const { em } = setup('x86_64');
  const blocks = new Map<number, Set<string>>();
  for (const type of [
    'module_text',
    'module_data',
    'module_rodata',
    'bpf',
    'kprobes',
    'ftrace',
  ] as ExecmemType[]) {
    const va = em.allocVa(type, 64);
    const k = Math.floor(va / SZ_2M);
    if (!blocks.has(k)) blocks.set(k, new Set());
    blocks.get(k)!.add(type);
  }
  for (const types of blocks.values()) {
    const text = [...types].filter((t) => ['module_text', 'bpf', 'kprobes', 'ftrace'].includes(t));
    assert.ok(text.length === 0 || text.length === types.size, `mixed block: ${[...types]}`);
  }
  assert.equal(em.stats().types.kprobes.pool, 'kprobes+ftrace+bpf');
  const perType = new Execmem(new FakeBackend(ARCHES.x86_64), { sharing: 'type' });
  assert.equal(perType.stats().types.kprobes.pool, 'kprobes');
  // arm64: ftrace inherits module_text's window, bpf/kprobes live in vmalloc: different pools.
  const arm = new Execmem(new FakeBackend(ARCHES.arm64));
  assert.equal(arm.stats().types.bpf.pool, 'kprobes+bpf');
  assert.equal(arm.stats().types.ftrace.pool, 'ftrace');
});

test("a free that empties a block keeps it as the pool's one spare; a load/unload loop maps nothing new", () => {
  const { fb, em } = setup();
  const vas = Array.from({ length: 100 }, () => em.allocVa('bpf', 60000)); // ~3 blocks
  const peak = em.stats().pools['kprobes+ftrace+bpf'].blocks;
  assert.ok(peak >= 3);
  for (const va of vas) em.freeVa(va);
  // Each block emptied after the first released the spare before it: one stays.
  assert.equal(em.stats().pools['kprobes+ftrace+bpf'].blocks, 1);
  assert.equal(em.stats().counters.blocksReleased, peak - 1);
  assert.equal(em.shrink(), 0, 'shrink keeps the spare');
  const mapped = fb.counters().blocksMapped;
  for (let i = 0; i < 50; i++) em.freeVa(em.allocVa('bpf', 3000));
  assert.equal(fb.counters().blocksMapped, mapped, 'the spare serves the loop');
  em.shrink({ keepSpare: false });
  assert.equal(fb.mappedBytes(), 0);
});

test('release delay: a spare still empty RELEASE_DELAY_CALLS calls later is released, a refilled one is not', () => {
  const { em } = setup('x86_64');
  const spareOf = () => em.stats().pools['kprobes+ftrace+bpf'].blocks;
  em.freeVa(em.allocVa('bpf', 100)); // the pool's block is now its empty spare
  assert.equal(spareOf(), 1);
  const text = em.allocVa('module_text', 100); // keeps module_text's block in use
  // Calls since the spare was made: its free (1) and the alloc above (2), then D - 4 more.
  for (let i = 0; i < (RELEASE_DELAY_CALLS - 4) / 2; i++) em.freeVa(em.allocVa('module_text', 64));
  const last = em.allocVa('module_text', 64); // call D - 1
  assert.equal(spareOf(), 1, 'not yet: the delay has not passed');
  em.freeVa(last); // call D
  assert.equal(spareOf(), 0, 'released once the delay passed');
  assert.equal(em.stats().pools.module_text.blocks, 1, 'a block in use stays');
  em.freeVa(text);
  // A spare refilled within the delay stays mapped.
  const b = em.allocVa('bpf', 100);
  em.freeVa(b);
  const keep = em.allocVa('bpf', 100);
  for (let i = 0; i < RELEASE_DELAY_CALLS; i++) em.freeVa(em.allocVa('module_text', 64));
  assert.equal(spareOf(), 1);
  assert.equal(em.sizeOfVa(keep), 100);
});

test('release delay 0 releases at once; spareMaxShare releases a block that is most of the mapping', () => {
  const now = new Execmem(new FakeBackend(ARCHES.x86_64), { releaseDelayCalls: 0 });
  now.freeVa(now.allocVa('bpf', 100));
  assert.equal(now.stats().pools['kprobes+ftrace+bpf'].blocks, 0);
  const share = new Execmem(new FakeBackend(ARCHES.x86_64), { spareMaxShare: 16 });
  share.freeVa(share.allocVa('bpf', 100));
  assert.equal(share.stats().pools['kprobes+ftrace+bpf'].blocks, 0, '2 MiB of 2 MiB mapped: released');
  const off = new Execmem(new FakeBackend(ARCHES.x86_64));
  off.freeVa(off.allocVa('bpf', 100));
  assert.equal(off.stats().pools['kprobes+ftrace+bpf'].blocks, 1, 'default: kept as the spare');
});

test('small tier: a data family maps 4 KiB-leaf blocks until its live bytes reach the threshold, then 2 MiB', () => {
  const from = 64 * 1024;
  const e = new Execmem(new FakeBackend(ARCHES.x86_64), { largeFromBytes: { data: from } });
  const first = e.allocVa('module_data', 1000);
  let s = e.stats();
  assert.equal(s.pools['module_data/small'].blocks, 1);
  assert.equal(s.pools['module_data/small'].blockBytes, SMALL_TIER_BLOCK_BYTES);
  assert.equal(s.pools['module_data/small'].leafBytes, SZ_4K);
  assert.equal(s.pools.module_data.blocks, 0, 'no 2 MiB block below the threshold');
  assert.equal(s.types.module_data.mappedBytes, SMALL_TIER_BLOCK_BYTES);
  const vas = [first];
  while (e.stats().types.module_data.liveBytes < from) vas.push(e.allocVa('module_data', 4000));
  // At the threshold: new objects go to a 2 MiB block (holes of the small tier first).
  const smallBlocks = e.stats().pools['module_data/small'].blocks;
  for (let i = 0; i < 8; i++) vas.push(e.allocVa('module_data', 4000));
  s = e.stats();
  assert.equal(s.pools.module_data.blocks, 1, 'the family moved to 2 MiB blocks');
  assert.equal(s.pools['module_data/small'].blocks, smallBlocks, 'and maps no more small blocks');
  // Below half the threshold it goes back to the small tier.
  while (e.stats().types.module_data.liveBytes >= from / 2) e.freeVa(vas.pop()!);
  const before = e.stats().pools.module_data.liveBytes;
  e.allocVa('module_data', 100);
  assert.equal(e.stats().pools.module_data.liveBytes, before, 'the new object went to the small tier');
  e.audit();
});

test('small tier off (threshold 0): the family maps 2 MiB blocks from the first byte, as text always does', () => {
  const e = new Execmem(new FakeBackend(ARCHES.x86_64), { largeFromBytes: { data: 0 } });
  e.allocVa('module_data', 100);
  e.allocVa('module_text', 100);
  const s = e.stats();
  assert.equal(s.pools.module_data.blocks, 1);
  assert.equal(s.pools['module_data/small'], undefined);
  assert.equal(s.pools.module_text.blocks, 1);
  assert.equal(s.pools['module_text/small'], undefined, 'text has no small tier by default');
  assert.equal(LARGE_TIER_FROM_BYTES.text, 0);
  assert.equal(
    execmemErrorCode(() => new Execmem(new FakeBackend(ARCHES.x86_64), { largeFromBytes: { data: -1 } })),
    'EINVAL',
  );
  assert.equal(
    execmemErrorCode(() => new Execmem(new FakeBackend(ARCHES.x86_64), { releaseDelayCalls: 1.5 })),
    'EINVAL',
  );
});

test('shrink never releases a block in use', () => {
  const { em } = setup();
  const a = em.allocVa('bpf', 100);
  em.shrink({ keepSpare: false });
  assert.equal(em.sizeOfVa(a), 100, 'the allocation is still live');
  assert.equal(em.stats().types.bpf.liveBytes, 128, '100 B occupy two 64 B granules');
  assert.equal(em.stats().pools['kprobes+ftrace+bpf'].blocks, 1);
});

test('4 KiB fallback blocks are counted in stats', () => {
  const { fb, em } = setup();
  fb.hugeFallbackNext(1);
  em.allocVa('module_text', 100);
  const s = em.stats();
  assert.equal(s.types.module_text.fallbackBlocks, 1);
  assert.equal(s.types.module_text.largeMappedBytes, 0);
  assert.equal(s.counters.hugeFallbacks, 1);
  em.allocVa('bpf', 100);
  assert.equal(em.stats().types.bpf.largeMappedBytes, BLOCK_BYTES);
});

test('updates at interior addresses of a long allocation find it; free space around it does not', () => {
  const { em } = setup();
  const va = em.allocVa('module_text', 300_000);
  const after = em.allocVa('module_text', 100);
  for (let off = 0; off < 300_000; off += 4099) em.updateVa(va + off, Uint8Array.of(off & 0xff));
  assert.equal(em.readVa(va + 4099 * 7, 1)[0], (4099 * 7) & 0xff);
  em.freeVa(va);
  assert.equal(
    execmemErrorCode(() => em.updateVa(va + 150_000, Uint8Array.of(1))),
    'EFREE',
  );
  assert.equal(
    execmemErrorCode(() => em.freeVa(va)),
    'EFREE',
  );
  assert.equal(em.sizeOfVa(after), 100);
});

test('objects larger than a block get their own mapping, released on free', () => {
  const { fb, em } = setup();
  const size = 5 * 1024 * 1024 + 3;
  const va = em.allocVa('module_text', size);
  assert.equal(va % SZ_2M, 0);
  assert.equal(em.sizeOfVa(va), size);
  assert.equal(em.stats().types.module_text.liveBytes, Math.ceil(size / 64) * 64, 'usable: granule-rounded');
  em.updateVa(va + 4 * 1024 * 1024, Uint8Array.of(0x90));
  assert.equal(em.readVa(va + 4 * 1024 * 1024, 1)[0], 0x90);
  assert.equal(
    execmemErrorCode(() => em.updateVa(va + size + 100, Uint8Array.of(1))),
    'EFREE',
  );
  const s = em.stats().pools.module_text;
  assert.equal(s.largeObjects, 1);
  assert.equal(s.mappedBytes, 6 * 1024 * 1024);
  assert.equal(s.liveBytes + s.freeBytes + s.largeSlackBytes, s.mappedBytes);
  em.freeVa(va);
  assert.equal(fb.mappedBytes(), 0);
  assert.equal(
    execmemErrorCode(() => em.freeVa(va)),
    'EFREE',
    'a double free, though the mapping is gone',
  );
  assert.equal(
    execmemErrorCode(() => em.freeVa(va + 8 * 1024 * 1024)),
    'ENOENT',
    'never mapped',
  );
});

test('atomic context: served from mapped blocks, EAGAIN when it would have to grow', () => {
  const { fb, em } = setup();
  assert.equal(
    execmemErrorCode(() => em.allocVa('bpf', 100, { atomic: true })),
    'EAGAIN',
  );
  assert.equal(fb.blockCount(), 0);
  em.freeVa(em.allocVa('bpf', 100));
  assert.ok(em.allocVa('bpf', 100, { atomic: true }) > 0);
  assert.equal(
    execmemErrorCode(() => em.allocVa('bpf', 3 * SZ_2M, { atomic: true })),
    'EAGAIN',
  );
  assert.equal(em.stats().counters.atomicRefusals, 2);
});

test('alignment is honoured and the bigint API round-trips canonical addresses', () => {
  const { em } = setup();
  for (const align of [1, 16, 64, 256, 4096]) {
    const va = em.allocVa('bpf', 77, { alignBytes: align });
    assert.equal(va % align, 0);
  }
  const p = em.alloc('module_text', 10);
  assert.ok(p > 0xffff_0000_0000_0000n);
  assert.equal(p, archToBig(ARCHES.x86_64, Number(p & 0xffff_ffff_ffffn)));
  em.update(p, Uint8Array.of(0xc3));
  assert.equal(em.read(p, 1)[0], 0xc3);
  em.free(p);
});

test('granule 16 packs tighter than 64 and both keep live + free = mapped', () => {
  for (const g of [16, 64] as const) {
    const { em } = setup('x86_64', { granuleBytes: g });
    for (let i = 1; i < 300; i++) em.allocVa('bpf', i * 3);
    const s = em.stats().pools['kprobes+ftrace+bpf'];
    assert.equal(s.granuleBytes, g);
    assert.equal(s.liveBytes + s.freeBytes + s.largeSlackBytes, s.mappedBytes);
    em.audit();
  }
});

test('formatStats renders pools, types and counters', () => {
  const { em } = setup();
  em.allocVa('bpf', 1000);
  const text = formatStats(em.stats());
  assert.match(text, /kprobes\+ftrace\+bpf/);
  assert.match(text, /module_ro_after_init/);
  assert.match(text, /permissionFlips\s+1/);
});
