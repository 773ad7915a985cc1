// Replay of every workload through the real Execmem allocator (engineer A's src/execmem) over an
// in-test Backend on plain memory that enforces page protections (a plain write to a page that
// is not RW throws, and no page may be made writable and executable at once). The cross-check:
// after the same trace, every live allocation holds exactly the bytes a trivial bump allocator
// holds for it, so replay drives both the same way and execmem stores what it was given.
// The same check runs on real memory through the host backend (koffi), where this machine allows.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ArchSpec, ExecmemType, Prot } from '../src/arch/types.js';
import { x86_64 } from '../src/arch/x86_64.js';
import { alignUp } from '../src/base/addr.js';
import {
  type Backend,
  type BackendBlock,
  type BackendCounters,
  BackendError,
  type MapBlockRequest,
  newBackendCounters,
} from '../src/execmem/backend.js';
import { Execmem } from '../src/execmem/execmem.js';
import { openHost } from '../src/host/backend.js';
import type { ExecAllocator } from '../src/policies/types.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { replay } from '../src/workloads/replay.js';

const PAGE = 4096;

/** Sparse memory with per-page protections, and a bump VA allocator per range. */
class PlainBackend implements Backend {
  readonly kind = 'sim' as const;
  readonly pageBytes = PAGE;
  readonly largePageBytes = 2 * 1024 * 1024;
  readonly hasAliasWrite = true;
  private readonly pages = new Map<number, Uint8Array>();
  private readonly prot = new Map<number, Prot>();
  private readonly tops = new Map<number, number>();
  private readonly c: BackendCounters = newBackendCounters();
  constructor(readonly arch: ArchSpec) {}

  mapBlock(req: MapBlockRequest): BackendBlock {
    const top = this.tops.get(req.range.start) ?? req.range.start;
    const va = alignUp(top, req.alignBytes);
    if (va + req.sizeBytes > req.range.end) throw new BackendError('ENOSPC', 'range full');
    this.tops.set(req.range.start, va + req.sizeBytes);
    for (let p = va; p < va + req.sizeBytes; p += PAGE) this.prot.set(p, 'rw');
    this.c.blocksMapped++;
    return { va, sizeBytes: req.sizeBytes, largePages: req.huge };
  }
  unmapBlock(block: BackendBlock): void {
    for (let p = block.va; p < block.va + block.sizeBytes; p += PAGE) {
      assert.ok(this.prot.delete(p), 'unmap of an unmapped page');
      this.pages.delete(p);
    }
    this.c.blocksUnmapped++;
  }
  private page(va: number): Uint8Array {
    const base = va - (va % PAGE);
    assert.ok(this.prot.has(base), `access to unmapped ${va.toString(16)}`);
    let bytes = this.pages.get(base);
    if (!bytes) {
      bytes = new Uint8Array(PAGE);
      this.pages.set(base, bytes);
    }
    return bytes;
  }
  private store(va: number, bytes: Uint8Array, plain: boolean): void {
    for (let i = 0; i < bytes.length; ) {
      const at = va + i;
      if (plain) assert.equal(this.prot.get(at - (at % PAGE)), 'rw', 'plain write to a page that is not RW');
      const n = Math.min(bytes.length - i, PAGE - (at % PAGE));
      this.page(at).set(bytes.subarray(i, i + n), at % PAGE);
      i += n;
    }
  }
  private pattern(sizeBytes: number, pattern: Uint8Array): Uint8Array {
    const out = new Uint8Array(sizeBytes);
    for (let i = 0; i < sizeBytes; i++) out[i] = pattern[i % pattern.length];
    return out;
  }
  write(va: number, bytes: Uint8Array): void {
    this.store(va, bytes, true);
  }
  fill(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.store(va, this.pattern(sizeBytes, pattern), true);
  }
  protect(_block: BackendBlock, va: number, sizeBytes: number, prot: Prot): void {
    assert.notEqual(prot, 'rwx', 'W+X requested');
    for (let p = va; p < va + sizeBytes; p += PAGE) this.prot.set(p, prot);
    this.c.permissionFlips++;
  }
  poke(va: number, bytes: Uint8Array): void {
    this.store(va, bytes, false);
    this.c.pokes++;
    this.c.pokeBytes += bytes.length;
  }
  pokeSet(va: number, sizeBytes: number, pattern: Uint8Array): void {
    this.poke(va, this.pattern(sizeBytes, pattern));
  }
  read(va: number, sizeBytes: number): Uint8Array {
    const out = new Uint8Array(sizeBytes);
    for (let i = 0; i < sizeBytes; i++) out[i] = this.page(va + i)[(va + i) % PAGE];
    return out;
  }
  counters(): BackendCounters {
    return { ...this.c };
  }
}

/** Execmem as an ExecAllocator (finalize is a no-op: execmem memory is final from the start). */
class ExecmemAllocator implements ExecAllocator {
  readonly name = 'execmem';
  readonly em: Execmem;
  readonly live = new Map<number, number>();
  constructor(backend: Backend) {
    this.em = new Execmem(backend, { seed: 1 });
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number): number {
    const va = this.em.allocVa(type, sizeBytes, alignBytes === undefined ? undefined : { alignBytes });
    this.live.set(va, sizeBytes);
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    this.em.updateVa(va, bytes);
  }
  finalize(va: number): void {
    assert.ok(this.live.has(va));
  }
  seal(va: number): void {
    this.em.sealVa(va);
  }
  free(va: number): void {
    this.em.freeVa(va);
    this.live.delete(va);
  }
  shrink(): void {
    this.em.shrink();
  }
  usage(): { liveBytes: number; mappedBytes: number } {
    let liveBytes = 0;
    for (const n of this.live.values()) liveBytes += n;
    return { liveBytes, mappedBytes: 0 };
  }
}

/** A bump allocator over one buffer: the reference for what each allocation should hold. */
class BumpAllocator implements ExecAllocator {
  readonly name = 'bump';
  readonly mem = new Uint8Array(256 * 1024 * 1024);
  private top = 0;
  alloc(_type: ExecmemType, sizeBytes: number, alignBytes = 16): number {
    const va = alignUp(this.top, alignBytes);
    this.top = va + sizeBytes;
    assert.ok(this.top <= this.mem.length);
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    this.mem.set(bytes, va);
  }
  finalize(): void {}
  seal(): void {}
  free(): void {}
  shrink(): void {}
  usage(): { liveBytes: number; mappedBytes: number } {
    return { liveBytes: 0, mappedBytes: this.top };
  }
}

function checkAgainstBump(newBackend: () => Backend & { close?(): void }, scale: number): void {
  for (const [name, spec] of Object.entries(WORKLOADS)) {
    const t = spec.generate({ seed: 21, scale });
    const backend = newBackend();
    try {
      const em = new ExecmemAllocator(backend);
      const ref = new BumpAllocator();
      const emAddr = new Map<number, number>();
      const refAddr = new Map<number, number>();
      const track = (into: Map<number, number>) => ({
        onEvent: (ev: { op: string; id?: number }, _i: number, ok: boolean) => {
          assert.ok(ok, `${name}: event failed`);
          if (ev.op === 'free') into.delete(ev.id!);
        },
      });
      // Addresses by trace id, taken from the allocators' alloc results in order.
      const wrap = (a: ExecAllocator, into: Map<number, number>): ExecAllocator => {
        let nextAllocEvent = 0;
        const allocIds = t.events.filter((e) => e.op === 'alloc').map((e) => (e as { id: number }).id);
        return {
          name: a.name,
          alloc: (ty, n, al) => {
            const va = a.alloc(ty, n, al);
            into.set(allocIds[nextAllocEvent++], va);
            return va;
          },
          write: (va, b) => a.write(va, b),
          finalize: (va) => a.finalize(va),
          seal: (va) => a.seal(va),
          free: (va) => a.free(va),
          shrink: () => a.shrink(),
          usage: () => a.usage(),
        };
      };
      const r1 = replay(t, wrap(em, emAddr), track(emAddr), { strict: true });
      const r2 = replay(t, wrap(ref, refAddr), track(refAddr), { strict: true });
      assert.deepEqual(r1.ops, r2.ops, name);
      assert.equal(r1.failureCount, 0);
      assert.equal(emAddr.size, r1.liveCount);
      const sizes = new Map(
        t.events
          .filter((e) => e.op === 'alloc')
          .map((e) => [(e as { id: number }).id, (e as { sizeBytes: number }).sizeBytes]),
      );
      let checked = 0;
      for (const [id, va] of emAddr) {
        const n = sizes.get(id)!;
        const want = ref.mem.subarray(refAddr.get(id)!, refAddr.get(id)! + n);
        const got = em.em.read(em.em.toBig(va), n);
        // Bytes never written hold execmem's fill (trap for text, zero for data) vs the reference's
        // zero: compare only written bytes, i.e. where the reference is non-zero or both agree.
        for (let i = 0; i < n; i++) {
          if (want[i] !== 0) assert.equal(got[i], want[i], `${name} id ${id} byte ${i}`);
        }
        checked += n;
      }
      assert.ok(checked > 0, `${name}: live bytes checked`);
    } finally {
      backend.close?.();
    }
  }
}

test('every workload replays through Execmem with no failure, and live contents match a bump reference', () => {
  checkAgainstBump(() => new PlainBackend(x86_64), 0.03);
});

for (const mode of ['dualmap', 'mprotect'] as const) {
  test(`workloads replay through Execmem on REAL memory (host backend, ${mode}) with matching contents`, (t) => {
    let probe: ReturnType<typeof openHost> | null = null;
    try {
      probe = openHost({ mode, textReserveBytes: 64 * 1024 * 1024, dataReserveBytes: 32 * 1024 * 1024 });
    } catch (err) {
      t.skip(`host backend unavailable here: ${(err as Error).message}`);
      return;
    }
    probe.close();
    checkAgainstBump(
      () => openHost({ mode, textReserveBytes: 64 * 1024 * 1024, dataReserveBytes: 32 * 1024 * 1024 }),
      0.01,
    );
  });
}
