/**
 * The module_ro_after_init pool's small blocks: RO_AFTER_INIT_BLOCK_BYTES (256 KiB) mapped with
 * 4 KiB leaves by design (the pool is sealed page by page, which would split a 2 MiB leaf anyway;
 * tglx, research/lkml-thread.md section 5). Checks, on the fake backend and on the simulated
 * machine: the block size and leaf size requested and obtained, stats that report these blocks as
 * 4K by design (never as 4K fallbacks), page-by-page sealing with W^X 0 judged by the machine,
 * objects above a block on their own page-rounded mapping, shrink's one-spare hysteresis, and
 * fault injection during growth leaving nothing behind.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARCHES } from '../src/arch/index.js';
import { alignUp, SZ_2M, SZ_4K } from '../src/base/addr.js';
import type { MapBlockRequest } from '../src/execmem/backend.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem, RO_AFTER_INIT_BLOCK_BYTES } from '../src/execmem/execmem.js';
import { SimBackend } from '../src/execmem/sim-backend.js';
import { formatStats } from '../src/execmem/stats.js';
import { createMachine } from '../src/machine/machine.js';
import { flagsToProt } from '../src/machine/types.js';
import { execmemErrorCode } from './helpers/execmem-error.js';
import { FakeBackend } from './helpers/fake-backend.js';

const RAI = 'module_ro_after_init';
const POOL = RAI;
const PAGES_PER_BLOCK = RO_AFTER_INIT_BLOCK_BYTES / SZ_4K;

function fakeWorld() {
  const fb = new FakeBackend(ARCHES.x86_64);
  const requests: MapBlockRequest[] = [];
  const map = fb.mapBlock.bind(fb);
  fb.mapBlock = (req: MapBlockRequest) => {
    requests.push({ ...req });
    return map(req);
  };
  // These tests are about the large tier (256 KiB blocks): the 4 KiB-leaf small tier is off.
  const em = new Execmem(fb, { seed: 5, largeFromBytes: { rodata: 0, ro_after_init: 0, data: 0 } });
  return { fb, em, requests };
}

test('ro_after_init blocks are 256 KiB, requested with 4 KiB leaves, and stats say so (not as fallbacks)', () => {
  const { fb, em, requests } = fakeWorld();
  assert.equal(RO_AFTER_INIT_BLOCK_BYTES, 256 * 1024);
  const vas = Array.from({ length: PAGES_PER_BLOCK }, () => em.allocVa(RAI, 100));
  assert.equal(requests.length, 1, 'one block serves 64 pages');
  assert.deepEqual(
    [requests[0].sizeBytes, requests[0].alignBytes, requests[0].huge],
    [RO_AFTER_INIT_BLOCK_BYTES, RO_AFTER_INIT_BLOCK_BYTES, false],
  );
  assert.equal(new Set(vas).size, PAGES_PER_BLOCK);
  const base = Math.min(...vas);
  assert.equal(base % RO_AFTER_INIT_BLOCK_BYTES, 0);
  for (const va of vas) assert.ok(va >= base && va < base + RO_AFTER_INIT_BLOCK_BYTES);
  em.allocVa(RAI, 100);
  assert.equal(requests.length, 2, 'the 65th page needs a second block');
  // Other pools are unchanged: 2 MiB blocks with 2 MiB leaves.
  em.allocVa('module_data', 64);
  assert.deepEqual([requests[2].sizeBytes, requests[2].huge], [SZ_2M, true]);
  const s = em.stats();
  const p = s.pools[POOL];
  assert.deepEqual(
    [p.blocks, p.blockBytes, p.leafBytes, p.smallLeafBlocks, p.fallbackBlocks, p.largeMappedBytes],
    [2, RO_AFTER_INIT_BLOCK_BYTES, SZ_4K, 2, 0, 0],
  );
  assert.equal(p.mappedBytes, 2 * RO_AFTER_INIT_BLOCK_BYTES);
  assert.equal(p.liveBytes + p.freeBytes, p.mappedBytes, 'live + free = mapped');
  assert.equal(s.counters.hugeFallbacks, 0, '4K by design is not a huge fallback');
  const d = s.pools.module_data;
  assert.deepEqual([d.blockBytes, d.leafBytes, d.smallLeafBlocks], [SZ_2M, SZ_2M, 0]);
  assert.equal(fb.mappedBytes(), 2 * RO_AFTER_INIT_BLOCK_BYTES + SZ_2M);
  const line = formatStats(s)
    .split('\n')
    .find((l) => l.trim().startsWith(POOL));
  assert.ok(line !== undefined);
  assert.match(line, /\s256\s+4K\s+0\s+512\s/, `blk_kB 256, leaf 4K, 0 fallbacks, 512 kB mapped: ${line}`);
  em.audit();
});

test('an armed 2 MiB fallback is not consumed by a ro_after_init block; a real fallback elsewhere is still counted', () => {
  const { fb, em } = fakeWorld();
  fb.hugeFallbackNext(1);
  em.allocVa(RAI, 100);
  assert.equal(em.stats().counters.hugeFallbacks, 0);
  em.allocVa('module_text', 100);
  const s = em.stats();
  assert.equal(s.pools.module_text.fallbackBlocks, 1);
  assert.equal(s.pools[POOL].fallbackBlocks, 0);
  assert.equal(s.counters.hugeFallbacks, 1);
});

test('ro_after_init objects above a block get their own 4K-leaf mapping rounded to the page', () => {
  const { fb, em, requests } = fakeWorld();
  const size = RO_AFTER_INIT_BLOCK_BYTES + 5000;
  const mapped = alignUp(size, SZ_4K);
  const va = em.allocVa(RAI, size);
  assert.deepEqual([requests[0].sizeBytes, requests[0].huge], [mapped, false]);
  assert.equal(va % RO_AFTER_INIT_BLOCK_BYTES, 0);
  assert.equal(em.sizeOfVa(va), size, 'sizeOf is the requested size');
  assert.equal(em.stats().pools[POOL].largeObjects, 1);
  assert.equal(em.stats().pools[POOL].largeSlackBytes, 0);
  // The look-up slot after the mapping's end is not execmem memory.
  assert.equal(
    execmemErrorCode(() => em.freeVa(va + mapped)),
    'ENOENT',
  );
  // read() inspects mapped memory only: an unmapped range is ERANGE (issue 13 item 18).
  assert.equal(
    execmemErrorCode(() => em.readVa(va + mapped + SZ_4K, 4)),
    'ERANGE',
  );
  em.updateVa(va + size - 4, Uint8Array.of(1, 2, 3, 4));
  assert.equal(
    execmemErrorCode(() => em.updateVa(va + size, Uint8Array.of(1))),
    'ERANGE',
    'the page rounding after the requested size is not writable',
  );
  em.sealVa(va);
  assert.equal(fb.protAt(va), 'ro');
  assert.equal(fb.protAt(va + mapped - 1), 'ro');
  em.freeVa(va);
  assert.equal(fb.mappedBytes(), 0);
  em.audit();
});

test('ro_after_init: the frees keep one 256 KiB spare (the clean releases the rest); a load/unload loop then maps nothing', () => {
  const { fb, em } = fakeWorld();
  const vas = Array.from({ length: 3 * PAGES_PER_BLOCK + 10 }, () => em.allocVa(RAI, 3000));
  assert.equal(em.stats().pools[POOL].blocks, 4);
  em.sealVa(vas[0]);
  for (const va of vas) em.freeVa(va);
  assert.equal(em.stats().pools[POOL].blocks, 1);
  assert.equal(em.stats().pools[POOL].emptyBlocks, 1);
  assert.equal(em.stats().counters.blocksReleased, 3);
  assert.equal(em.shrink(), 0, 'shrink keeps the spare');
  const mappedCount = fb.counters().blocksMapped;
  for (let i = 0; i < 40; i++) {
    const va = em.allocVa(RAI, 8000);
    em.sealVa(va);
    em.freeVa(va);
  }
  assert.equal(fb.counters().blocksMapped, mappedCount, 'the spare serves the loop');
  assert.equal(em.shrink({ keepSpare: false }), RO_AFTER_INIT_BLOCK_BYTES);
  assert.equal(fb.mappedBytes(), 0);
  assert.equal(fb.wxViolationCount(), 0);
});

test('sim: ro_after_init blocks use 4 KiB leaves, seal page by page with W^X 0; text keeps 2 MiB leaves', () => {
  for (const arch of ['x86_64', 'arm64', 'generic'] as const) {
    const m = createMachine({ arch, memoryBytes: 2 ** 30, cpus: 4, seed: 2 });
    const em = new Execmem(new SimBackend(m), {
      seed: 2,
      largeFromBytes: { rodata: 0, ro_after_init: 0, data: 0 },
    });
    const text = em.allocVa('module_text', 100);
    assert.equal(m.kernelPt.walk(text)?.level, 2, `${arch}: text on a 2 MiB leaf`);
    const vas = Array.from({ length: 12 }, (_, i) => em.allocVa(RAI, (1 + (i % 3)) * SZ_4K - 100));
    for (const va of vas) em.updateVa(va, Uint8Array.of(7, 7, 7));
    vas.forEach((va, i) => {
      if (i % 2 === 0) em.sealVa(va);
    });
    vas.forEach((va, i) => {
      for (let off = 0; off < alignUp(em.sizeOfVa(va), SZ_4K); off += SZ_4K) {
        const t = m.kernelPt.walk(va + off);
        assert.ok(t !== null);
        assert.equal(t.level, 1, `${arch}: ro_after_init on 4 KiB leaves`);
        assert.equal(flagsToProt(t.flags), i % 2 === 0 ? 'ro' : 'rw', `${arch}: object ${i} page ${off}`);
      }
    });
    assert.equal(m.wxViolationCount(), 0, `${arch}: W^X`);
    const s = em.stats();
    assert.deepEqual(
      [s.pools[POOL].smallLeafBlocks, s.pools[POOL].fallbackBlocks, s.counters.hugeFallbacks],
      [1, 0, 0],
    );
    for (const va of vas) em.freeVa(va);
    assert.equal(m.wxViolationCount(), 0);
    em.freeVa(text);
    em.shrink({ keepSpare: false });
    m.checkConsistency();
  }
});

test('sim: fail each physical allocation in turn while ro_after_init grows: ENOMEM and nothing left behind, else success', () => {
  const m = createMachine({ arch: 'x86_64', memoryBytes: 2 ** 30, cpus: 4, seed: 3 });
  const em = new Execmem(new SimBackend(m), {
    seed: 3,
    largeFromBytes: { rodata: 0, ro_after_init: 0, data: 0 },
  });
  const filler = em.allocVa(RAI, RO_AFTER_INIT_BLOCK_BYTES - 2 * SZ_4K); // next 3-page object must grow
  let failed = 0;
  let ok = false;
  for (let nth = 1; nth <= PAGES_PER_BLOCK + 16 && !ok; nth++) {
    const pools = JSON.stringify(em.stats().pools);
    const f0 = m.frameAccounting();
    m.phys.injectFailure(0, nth);
    let va = -1;
    try {
      va = em.allocVa(RAI, 3 * SZ_4K);
    } catch (e) {
      assert.ok(e instanceof ExecmemError && e.code === 'ENOMEM', `unexpected ${String(e)}`);
      failed++;
    } finally {
      m.phys.clearInjectedFailures();
    }
    if (va < 0) {
      assert.equal(JSON.stringify(em.stats().pools), pools, 'a failed alloc changes no pool');
      const f1 = m.frameAccounting();
      assert.equal(f1.mappedFrames, f0.mappedFrames, 'no frame stays mapped');
      assert.equal(f1.freeFrames + f1.tableFrames, f0.freeFrames + f0.tableFrames, 'no frame leaked');
    } else {
      ok = true;
      em.freeVa(va);
    }
    assert.equal(m.wxViolationCount(), 0);
    em.audit();
  }
  assert.ok(
    failed >= PAGES_PER_BLOCK,
    `each of the block's ${PAGES_PER_BLOCK} frames failed in turn (${failed})`,
  );
  assert.ok(ok, 'with no failure left to inject the allocation succeeds');
  em.freeVa(filler);
  em.shrink({ keepSpare: false });
  m.checkConsistency();
});
