/**
 * W^X on the host backend for the BPF tests: no mapping inside the backend's own reservations
 * (text view, its RW alias, data) may be writable and executable at once (/proc/self/maps).
 * Mappings outside them (V8's and koffi's own code) are not the allocator's and are not checked.
 */
import assert from 'node:assert/strict';
import { type HostBackend, readMaps } from '../../src/host/index.js';

export function assertNoWxInArena(h: HostBackend): void {
  const ranges = h.report().families.flatMap((f) => {
    const view = Number.parseInt(f.viewBase, 16);
    const out = [{ start: view, end: view + f.capacityBytes }];
    if (f.aliasBase !== null) {
      const a = Number.parseInt(f.aliasBase, 16);
      out.push({ start: a, end: a + f.capacityBytes });
    }
    return out;
  });
  for (const m of readMaps()) {
    if (!ranges.some((r) => m.start < r.end && m.end > r.start)) continue;
    assert.ok(!(m.perms[1] === 'w' && m.perms[2] === 'x'), `W+X mapping in the arena: ${JSON.stringify(m)}`);
  }
}
