import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { ArchName, Prot } from '../src/arch/types.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { VmArea } from '../src/machine/types.js';
import { protToFlags } from '../src/machine/types.js';
import { assertWx, faultKind, GIB } from './machine-helpers.js';

const PAGE = 4096;

type Op =
  | { k: 'vmalloc'; pages: number; huge: boolean; reset: boolean }
  | { k: 'vfree'; pick: number }
  | { k: 'protect'; pick: number; from: number; count: number; prot: 'ro' | 'rw' | 'rox' }
  | { k: 'poke'; pick: number; off: number; len: number; cpu: number; seed: number }
  | { k: 'store'; pick: number; off: number; len: number; cpu: number; seed: number }
  | { k: 'load'; pick: number; off: number; cpu: number }
  | { k: 'fetch'; pick: number; off: number; cpu: number }
  | { k: 'purge' };

const cpu = fc.nat(1);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      k: fc.constant('vmalloc' as const),
      pages: fc.integer({ min: 1, max: 24 }),
      huge: fc.boolean(),
      reset: fc.boolean(),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ k: fc.constant('vfree' as const), pick: fc.nat() }), weight: 1 },
  {
    arbitrary: fc.record({
      k: fc.constant('protect' as const),
      pick: fc.nat(),
      from: fc.nat(),
      count: fc.integer({ min: 1, max: 600 }),
      prot: fc.constantFrom<'ro' | 'rw' | 'rox'>('ro', 'rw', 'rox', 'rox'),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      k: fc.constant('poke' as const),
      pick: fc.nat(),
      off: fc.nat(),
      len: fc.integer({ min: 1, max: 9000 }),
      cpu,
      seed: fc.nat(255),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      k: fc.constant('store' as const),
      pick: fc.nat(),
      off: fc.nat(),
      len: fc.integer({ min: 1, max: 64 }),
      cpu,
      seed: fc.nat(255),
    }),
    weight: 2,
  },
  {
    arbitrary: fc.record({ k: fc.constant('load' as const), pick: fc.nat(), off: fc.nat(), cpu }),
    weight: 1,
  },
  {
    arbitrary: fc.record({ k: fc.constant('fetch' as const), pick: fc.nat(), off: fc.nat(), cpu }),
    weight: 2,
  },
  { arbitrary: fc.constant({ k: 'purge' as const }), weight: 1 },
);

interface Live {
  area: VmArea;
  prot: Prot[];
  bytes: Uint8Array;
}

function rangeOf(m: Machine): { start: number; end: number } {
  return m.arch.name === 'arm64'
    ? m.arch.layout.vmalloc
    : { start: m.modulesStart, end: m.arch.layout.modules.end };
}

function frameOf(a: VmArea, off: number): number {
  return a.leafPfns[Math.floor(off / a.leafBytes)] + Math.floor((off % a.leafBytes) / PAGE);
}

/** Translations of every (sampled) page and its direct-map alias match the model. */
function checkTranslations(m: Machine, live: Live[]): void {
  const dm = m.arch.layout.directMapStart;
  for (const l of live) {
    const pages = l.area.sizeBytes / PAGE;
    const step = pages > 64 ? 37 : 1;
    for (let p = 0; p < pages; p += step) {
      const t = m.kernelPt.walk(l.area.va + p * PAGE);
      assert.ok(t !== null, 'area page unmapped');
      assert.equal(t.flags, protToFlags(l.prot[p]), `page ${p} flags`);
      const pfn = t.pfn + (l.area.va + p * PAGE - t.va) / PAGE;
      assert.equal(pfn, frameOf(l.area, p * PAGE), 'page maps the area frame');
      const alias = m.kernelPt.walk(dm + pfn * PAGE);
      assert.equal(alias?.flags, protToFlags(l.prot[p] === 'rw' ? 'rw' : 'ro'), `alias of page ${p}`);
    }
  }
}

function runSequence(arch: ArchName, ops: Op[]): void {
  const m = createMachine({ arch, memoryBytes: GIB, cpus: 2, seed: 3 });
  const range = rangeOf(m);
  const live: Live[] = [];
  const trap = m.arch.trapPattern;
  let step = 0;
  for (const op of ops) {
    step++;
    if (op.k === 'vmalloc') {
      const size = op.huge ? 2 ** 21 : op.pages * PAGE;
      const area = m.vmalloc({
        sizeBytes: size,
        range,
        prot: 'rw',
        allowHuge: op.huge,
        flushResetPerms: op.reset,
      });
      live.push({
        area,
        prot: new Array(area.sizeBytes / PAGE).fill('rw'),
        bytes: new Uint8Array(area.sizeBytes),
      });
    } else if (op.k === 'purge') {
      m.purgeLazy();
    } else if (live.length > 0) {
      const l = live[op.pick % live.length];
      const size = l.area.sizeBytes;
      if (op.k === 'vfree') {
        m.vfree(l.area.va);
        live.splice(live.indexOf(l), 1);
      } else if (op.k === 'protect') {
        // Only areas freed with VM_FLUSH_RESET_PERMS may change protections (else the alias
        // would stay read-only after the free, which Linux treats as a caller bug).
        if (!l.area.flushResetPerms) continue;
        const from = op.from % (size / PAGE);
        const count = Math.min(op.count, size / PAGE - from);
        m.setMemory(l.area.va + from * PAGE, count, op.prot);
        l.prot.fill(op.prot, from, from + count);
      } else if (op.k === 'poke') {
        if (m.arch.patch === 'none') continue;
        const off = op.off % size;
        const len = Math.min(op.len, size - off);
        const bytes = new Uint8Array(len).map((_, i) => (op.seed + i * 31) & 0xff);
        m.poke(op.cpu, l.area.va + off, bytes);
        l.bytes.set(bytes, off);
      } else if (op.k === 'store') {
        const off = op.off % size;
        const len = Math.min(op.len, size - off);
        const bytes = new Uint8Array(len).fill(op.seed);
        const firstPage = Math.floor(off / PAGE);
        const lastPage = Math.floor((off + len - 1) / PAGE);
        const ok = l.prot.slice(firstPage, lastPage + 1).every((p) => p === 'rw');
        if (ok) {
          m.store(op.cpu, l.area.va + off, bytes);
          l.bytes.set(bytes, off);
        } else {
          assert.equal(
            faultKind(() => m.store(op.cpu, l.area.va + off, bytes)),
            'write-protect',
          );
        }
      } else if (op.k === 'load') {
        const off = op.off % size;
        assert.deepEqual(m.load(op.cpu, l.area.va + off, 1), l.bytes.subarray(off, off + 1));
      } else {
        const off = op.off % size;
        const at = off - (off % trap.length);
        if (at + trap.length > size) continue;
        if (l.prot[Math.floor(at / PAGE)] !== 'rox') {
          assert.equal(
            faultKind(() => m.fetch(op.cpu, l.area.va + at, trap.length)),
            'nx',
          );
        } else if (trap.every((b, i) => l.bytes[at + i] === b)) {
          assert.equal(
            faultKind(() => m.fetch(op.cpu, l.area.va + at, trap.length)),
            'trap',
          );
        } else {
          assert.deepEqual(
            m.fetch(op.cpu, l.area.va + at, trap.length),
            l.bytes.subarray(at, at + trap.length),
          );
          assert.equal(m.ifetch(op.cpu, l.area.va + at), l.bytes[at]);
        }
      }
    }
    assertWx(m, 0);
    checkTranslations(m, live);
    const a = m.frameAccounting();
    assert.equal(a.freeFrames + a.tableFrames + a.mappedFrames, a.totalFrames);
    if (step % 8 === 0) m.checkConsistency();
  }
  m.checkConsistency();
  // Free everything: every frame but the image and the page tables returns to the buddy allocator.
  for (const l of live) m.vfree(l.area.va);
  m.purgeLazy();
  assertWx(m, 0);
  m.checkConsistency();
  const a = m.frameAccounting();
  assert.equal(a.mappedFrames, (m.areas()[0].sizeBytes / PAGE) | 0, 'only the kernel image is left');
  assert.equal(m.staleTlbEntryCount(), 0);
}

for (const arch of ['x86_64', 'arm64', 'generic'] as const) {
  test(`${arch}: random vmalloc/vfree/protect/poke/store/fetch sequences keep W^X, translations and frames exact`, () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 30 }), (ops) => runSequence(arch, ops)),
      { numRuns: arch === 'x86_64' ? 40 : 20 },
    );
  });
}
