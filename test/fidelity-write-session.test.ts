/**
 * Fidelity of the machine's write session (src/machine/write-session.ts), OUR allocator's alias
 * write: what one session costs and what it leaves behind, against the Linux patching paths it
 * replaces for execmem only (x86 arch/x86/kernel/alternative.c text_poke_copy_locked / __text_poke:
 * a local flush per step of at most two pages; arm64 arch/arm64/kernel/patching.c
 * aarch64_insn_copy: a broadcast TLBI per fixmap page, one caches_clean_inval_pou per copy).
 *
 * Pinned here: one local flush per session whatever its length up to the 1024-page window
 * (flush_tlb_mm_range on the poking mm, x86; TLBI ASIDE1 + DSB NSH, arm64), chunking beyond it,
 * arm64 I-cache maintenance once per write and no broadcast, nothing left mapped or cached in the
 * window afterwards, the W^X audit at 0 throughout (full scan too), the Linux paths unchanged, and
 * the session's refusals (a second session, text_poke meanwhile, vfree of a held area: EBUSY).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { ArchName } from '../src/arch/types.js';
import { createMachine, type Machine } from '../src/machine/machine.js';
import type { MachineCounters, VmArea } from '../src/machine/types.js';
import { WRITE_SESSION_PAGES, writeSessionWindow } from '../src/machine/write-session.js';
import { assertWx, errCode, GIB, modRange, snapshot } from './machine-helpers.js';

const PAGE = 4096;
const MIB = 2 ** 20;

function machine(arch: ArchName, cpus = 4): Machine {
  return createMachine({ arch, memoryBytes: 2 * GIB, cpus, seed: 1 });
}

/** A ROX area of `sizeBytes` (module text as Linux leaves it after module_enable_text_rox). */
function roxArea(m: Machine, sizeBytes: number): VmArea {
  const range = m.arch.name === 'arm64' ? m.arch.layout.vmalloc : modRange(m);
  const a = m.vmalloc({ sizeBytes, range, prot: 'rw', allowHuge: false, flushResetPerms: true });
  m.setMemory(a.va, sizeBytes / PAGE, 'rox');
  return a;
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

/** Bytes at a kernel VA as physical memory holds them (no TLB or counter side effects). */
function physBytes(m: Machine, va: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let done = 0; done < n; ) {
    const at = va + done;
    const k = Math.min(PAGE - (at % PAGE), n - done);
    const t = m.kernelPt.walk(at - (at % PAGE));
    assert.ok(t !== null);
    out.set(m.phys.read(t.pfn * PAGE + (at - t.va), k), done);
    done += k;
  }
  return out;
}

/** Nothing of the window is mapped in the session mm, and no CPU's TLB holds any of it. */
function assertWindowEmpty(m: Machine): void {
  const w = writeSessionWindow(m.arch);
  assert.ok(w !== null);
  for (let va = w.start; va < w.end; va += PAGE) {
    assert.equal(m.writeSessionLeaf(va), null, `window page 0x${va.toString(16)} still mapped`);
  }
  for (const tlb of m.tlbs)
    assert.equal(tlb.overlapping(w.start, w.end - w.start).length, 0, 'window cached');
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0x7f; // never 0xcc nor a BRK word
  return b;
}

for (const arch of ['x86_64', 'arm64'] as const) {
  describe(`write session ${arch}`, () => {
    it('one local flush per session whatever its length up to the window; no shootdown, no broadcast', () => {
      for (const pages of [1, 2, 3, 100, WRITE_SESSION_PAGES]) {
        const m = machine(arch);
        const a = roxArea(m, WRITE_SESSION_PAGES * PAGE);
        const d = delta(m, () => {
          const s = m.openWriteSession(1);
          // One write per page, so pages are mapped one by one as they are reached.
          for (let p = 0; p < pages; p++) s.write(a.va + p * PAGE + 8, bytes(PAGE - 8, p));
          assert.equal(m.counters.localFlushes, 0, 'no flush before the session ends');
          assertWx(m, 0);
          s.close();
        });
        assert.equal(d.localFlushes, 1, `${pages} pages: one local flush`);
        assert.equal(d.shootdowns ?? 0, 0);
        assert.equal(d.ipis ?? 0, 0);
        assert.equal(d.broadcastFlushes ?? 0, 0, 'no broadcast TLBI (arm64: a local TLBI of the ASID)');
        assert.equal(d.pokeSteps, pages, 'one switch into the session mm per write');
        assert.equal(d.pokes, pages);
        // arm64: caches_clean_inval_pou once per write (by VA, broadcast by hardware); x86: none.
        assert.equal(d.icacheFlushes ?? 0, arch === 'arm64' ? pages : 0);
        for (let p = 0; p < pages; p += Math.max(1, pages >> 3))
          assert.deepEqual(physBytes(m, a.va + p * PAGE + 8, PAGE - 8), bytes(PAGE - 8, p));
        assertWindowEmpty(m);
        assertWx(m, 0);
        assert.equal(m.kernelPt.walk(a.va)?.flags, m.kernelPt.walk(a.va + PAGE)?.flags, 'target unchanged');
        m.checkConsistency();
      }
    });

    it('one write of the whole window is one flush and one switch; a longer one is chunked', () => {
      const m = machine(arch);
      const a = roxArea(m, (3 * WRITE_SESSION_PAGES + 1) * PAGE);
      const all = bytes(3 * WRITE_SESSION_PAGES * PAGE, 3);
      let d = delta(m, () => {
        const s = m.openWriteSession(0);
        s.write(a.va, all.subarray(0, WRITE_SESSION_PAGES * PAGE));
        s.close();
      });
      assert.equal(d.localFlushes, 1);
      assert.equal(d.pokeSteps, 1);
      // 3072 pages' worth from offset 50: 3073 pages touched = 4 chunks, 4 flushes.
      d = delta(m, () => {
        const s = m.openWriteSession(0);
        s.write(a.va + 50, all);
        s.close();
      });
      assert.equal(d.localFlushes, 4, 'each chunk of at most 1024 pages is one flush');
      assert.equal(d.pokeSteps, 4, 'a chunk boundary inside a write switches out and in again');
      assert.deepEqual(physBytes(m, a.va + 50, all.length), all);
      assertWindowEmpty(m);
      assertWx(m, 0);
    });

    it('chunking beyond the window across writes: 1025 distinct pages cost two flushes', () => {
      const m = machine(arch);
      const a = roxArea(m, 2 * WRITE_SESSION_PAGES * PAGE);
      const f0 = m.counters.localFlushes;
      const d = delta(m, () => {
        const s = m.openWriteSession(0);
        for (let p = 0; p <= WRITE_SESSION_PAGES; p++) s.write(a.va + p * PAGE, Uint8Array.of(p & 0x7f));
        assert.equal(m.counters.localFlushes - f0, 1, 'the full window was torn down once mid-session');
        s.close();
      });
      assert.equal(d.localFlushes, 2);
      assertWindowEmpty(m);
    });

    it('rewriting pages already in the window maps nothing new (fill over a write, one flush)', () => {
      const m = machine(arch);
      const a = roxArea(m, 4 * PAGE);
      const d = delta(m, () => {
        const s = m.openWriteSession(2);
        s.write(a.va, bytes(3 * PAGE, 1));
        s.fill(a.va + 100, 2 * PAGE, m.arch.trapPattern);
        assert.equal(s.mappedPageCount, 3);
        s.close();
      });
      assert.equal(d.localFlushes, 1);
      const trap = physBytes(m, a.va + 100, 2 * PAGE);
      const pat = m.arch.trapPattern;
      for (let i = 0; i < trap.length; i++) assert.equal(trap[i], pat[i % pat.length]);
      assertWindowEmpty(m);
    });

    it('property: any writes touching at most the window cost one flush, and land byte for byte', () => {
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.nat(64 * PAGE - 1), fc.integer({ min: 1, max: 3 * PAGE })), {
            minLength: 1,
            maxLength: 12,
          }),
          (writes) => {
            const m = machine(arch, 2);
            const a = roxArea(m, 68 * PAGE);
            const ref = physBytes(m, a.va, 68 * PAGE);
            const d = delta(m, () => {
              const s = m.openWriteSession(1);
              writes.forEach(([off, n], k) => {
                const b = bytes(n, k);
                s.write(a.va + off, b);
                ref.set(b, off);
                assert.equal(m.wxViolationCount(), 0);
              });
              s.close();
            });
            assert.equal(d.localFlushes, 1);
            assert.equal(d.broadcastFlushes ?? 0, 0);
            assert.deepEqual(physBytes(m, a.va, 68 * PAGE), ref);
            assertWindowEmpty(m);
            assertWx(m, 0);
          },
        ),
        { numRuns: 15, seed: 12 },
      );
    });

    it('a failed write changes nothing, inside a session too; the session still closes cleanly', () => {
      const m = machine(arch);
      const a = roxArea(m, 4 * PAGE);
      const s = m.openWriteSession(0);
      s.write(a.va, bytes(100, 1));
      const before = snapshot(m);
      const leafBefore = m.writeSessionLeaf(writeSessionWindow(m.arch)!.start);
      assert.equal(
        errCode(() => s.write(m.kernelTextStart, Uint8Array.of(1))),
        'EINVAL',
        'core kernel text',
      );
      assert.equal(
        errCode(() => s.write(a.va + 4 * PAGE - 1, Uint8Array.of(1, 2))),
        'EINVAL',
        'crosses the end',
      );
      assert.equal(
        errCode(() => s.write(a.va, new Uint8Array(0))),
        'EINVAL',
        'empty',
      );
      assert.equal(
        errCode(() => s.fill(a.va, 4, new Uint8Array(0))),
        'EINVAL',
        'empty pattern',
      );
      assert.equal(snapshot(m), before);
      assert.deepEqual(m.writeSessionLeaf(writeSessionWindow(m.arch)!.start), leafBefore);
      assert.equal(s.mappedPageCount, 1);
      s.close();
      assertWindowEmpty(m);
      assert.equal(
        errCode(() => s.write(a.va, Uint8Array.of(1))),
        'EINVAL',
        'closed',
      );
    });

    it('refusals: one session at a time, no text_poke meanwhile, no vfree of an area it maps', () => {
      const m = machine(arch);
      const a = roxArea(m, 4 * PAGE);
      const b = roxArea(m, 4 * PAGE);
      const s = m.openWriteSession(0);
      s.write(a.va, Uint8Array.of(1));
      assert.equal(
        errCode(() => m.openWriteSession(1)),
        'EBUSY',
      );
      assert.equal(
        errCode(() => m.poke(0, b.va, Uint8Array.of(1))),
        'EBUSY',
        'text_mutex / patch_lock',
      );
      assert.equal(
        errCode(() => m.pokeSet(0, b.va, 1, Uint8Array.of(0xcc))),
        'EBUSY',
      );
      assert.equal(
        errCode(() => m.vfree(a.va)),
        'EBUSY',
        'an alias may not outlive its frames',
      );
      m.vfree(b.va); // not in the window
      s.flush();
      assertWindowEmpty(m);
      m.vfree(a.va);
      s.close();
      assert.equal(m.openedWriteSession(), null);
      m.checkConsistency();
    });

    it('the Linux patching path is unchanged beside it (100 pages: 50 x86 steps / 100 arm64 broadcasts)', () => {
      const m = machine(arch);
      const a = roxArea(m, 101 * PAGE);
      const d = delta(m, () => m.poke(0, a.va, bytes(100 * PAGE, 5)));
      if (arch === 'x86_64') {
        assert.equal(d.localFlushes, 50, 'text_poke_copy_locked: one flush per 2-page step');
        assert.equal(d.pokeSteps, 50);
      } else {
        assert.equal(d.broadcastFlushes, 100, 'aarch64_insn_copy: clear_fixmap per page');
        assert.equal(d.icacheFlushes, 1);
        assert.equal(d.localFlushes ?? 0, 0);
      }
      const e = delta(m, () => {
        const s = m.openWriteSession(0);
        s.write(a.va, bytes(100 * PAGE, 6));
        s.close();
      });
      assert.equal(e.localFlushes, 1);
      assert.equal(e.broadcastFlushes ?? 0, 0);
    });

    it('preparation allocates the window tables once, accounted and owned', () => {
      const m = machine(arch);
      const t0 = m.frameAccounting().tableFrames;
      m.prepareWriteSessions();
      const t1 = m.frameAccounting().tableFrames;
      // x86: the poking mm's second PTE table (poking_init made the first); arm64: a whole 4-level mm.
      assert.equal(t1 - t0, arch === 'x86_64' ? 1 : 5);
      m.prepareWriteSessions();
      assert.equal(m.frameAccounting().tableFrames, t1, 'idempotent');
      const a = roxArea(m, 8 * PAGE);
      const d = delta(m, () => {
        const s = m.openWriteSession(3);
        s.write(a.va, bytes(8 * PAGE, 1));
        s.close();
      });
      assert.equal(d.ptFramesAllocated ?? 0, 0, 'a session allocates no page-table frame');
      m.checkConsistency();
    });
  });
}

describe('write session generic', () => {
  it('no alias write, no session (ENOTSUP)', () => {
    const m = machine('generic');
    assert.equal(
      errCode(() => m.prepareWriteSessions()),
      'ENOTSUP',
    );
    assert.equal(
      errCode(() => m.openWriteSession(0)),
      'ENOTSUP',
    );
  });

  it('x86 session window is the 4 MiB poking area; arm64 a separate TTBR0 window', () => {
    const x = machine('x86_64');
    assert.deepEqual(writeSessionWindow(x.arch), x.arch.layout.pokeArea);
    const w = writeSessionWindow(machine('arm64').arch);
    assert.ok(w !== null && w.end - w.start === 4 * MIB);
  });
});
