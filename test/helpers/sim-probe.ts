/**
 * The ModelProbe for execmem on the simulated machine: the machine itself judges the invariants
 * (its incremental W^X audit, its frame accounting, raw physical reads of free space, page-table
 * protections), so a test never trusts what the allocator says about itself.
 */
import assert from 'node:assert/strict';
import type { Machine } from '../../src/machine/machine.js';
import { flagsToProt } from '../../src/machine/types.js';
import type { ModelProbe } from './execmem-model.js';

export function areaBytes(m: Machine): number {
  return m.areas().reduce((s, a) => s + a.sizeBytes, 0);
}

export function simProbe(m: Machine): ModelProbe {
  const base = areaBytes(m);
  const baseFrames = m.frameAccounting().mappedFrames;
  return {
    raw(va, n) {
      const out = new Uint8Array(n);
      for (let done = 0; done < n; ) {
        const t = m.kernelPt.walk(va + done);
        assert.ok(t !== null, `no mapping at 0x${(va + done).toString(16)}`);
        const k = Math.min(4096 - ((va + done) % 4096), n - done);
        out.set(m.phys.read(t.pfn * 4096 + (va + done - t.va), k), done);
        done += k;
      }
      return out;
    },
    protAt(va) {
      const t = m.kernelPt.walk(va);
      return t === null ? undefined : flagsToProt(t.flags);
    },
    check() {
      assert.equal(m.wxViolationCount(), 0, 'W^X audit');
      const f = m.frameAccounting();
      assert.equal(
        f.freeFrames + f.tableFrames + f.mappedFrames,
        f.totalFrames,
        'frames: free + tables + mapped = total',
      );
      assert.equal(
        (f.mappedFrames - baseFrames) * 4096,
        areaBytes(m) - base,
        'frames mapped = execmem blocks',
      );
    },
    mappedBytes: () => areaBytes(m) - base,
  };
}
