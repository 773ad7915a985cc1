/** Shared helpers for the machine tests (not a test file itself). */
import assert from 'node:assert/strict';
import { MachineError, MachineFault } from '../src/machine/errors.js';
import type { Machine } from '../src/machine/machine.js';
import type { FaultKind } from '../src/machine/types.js';

export const GIB = 2 ** 30;

export function errCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof MachineError, `expected MachineError, got ${e}`);
    return e.code;
  }
  assert.fail('expected a MachineError');
}

export function faultKind(fn: () => unknown): FaultKind {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof MachineFault, `expected MachineFault, got ${e}`);
    return e.kind;
  }
  assert.fail('expected a MachineFault');
}

/** Everything observable about a machine's memory state, for "changed nothing" comparisons. */
export function snapshot(m: Machine): string {
  return JSON.stringify({
    acct: m.frameAccounting(),
    dump: m.ptdump(),
    counters: m.counters,
    areas: m.areas(),
    buddy: m.phys.buddyInfo(),
    dmap: m.directMapStats(),
    wx: m.wxViolationCount(),
  });
}

/** W^X: the incremental count, the full scan and the expectation agree. */
export function assertWx(m: Machine, expected: number): void {
  assert.equal(m.wxViolationCount(), expected, 'incremental W^X count');
  assert.equal(m.wxFullScan().length, expected, 'full-scan W^X count');
}

/** A vmalloc range for module-like allocations. */
export function modRange(m: Machine): { start: number; end: number } {
  return { start: m.modulesStart, end: m.arch.layout.modules.end };
}
