import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ARCHES, archHex, archToBig, archToVa, EXECMEM_TYPES } from '../src/arch/index.js';
import { alignUp, toBigAddr, toVa } from '../src/base/addr.js';

test('x86-64 canonical addresses round-trip through 48-bit form', () => {
  for (const a of [0xffffffffa0000000n, 0xffff888000000000n, 0xffffc90000000000n, 0x7f0000001000n]) {
    assert.equal(toBigAddr(toVa(a)), a);
  }
  assert.throws(() => toVa(0x0000900000000000n), RangeError);
});

test('arm64 TTBR1 addresses round-trip and the linear map starts at 0xffff000000000000', () => {
  const arm = ARCHES.arm64;
  assert.equal(archToBig(arm, arm.layout.directMapStart), 0xffff000000000000n);
  assert.equal(archToVa(arm, 0xffff800000000000n), arm.layout.modules.start);
  assert.equal(archHex(arm, arm.layout.modules.start), '0xffff800000000000');
  assert.throws(() => archToVa(arm, 0x1000n), RangeError);
});

test('x86-64 module area matches Documentation/arch/x86/x86_64/mm.rst', () => {
  const x = ARCHES.x86_64;
  assert.equal(toBigAddr(x.layout.modules.start), 0xffffffffa0000000n);
  assert.equal(toBigAddr(x.layout.modules.end), 0xffffffffff000000n);
  assert.equal((x.layout.modules.end - x.layout.modules.start) / 2 ** 20, 1520);
  assert.equal(toBigAddr(x.layout.modulesKaslr.start), 0xffffffffc0000000n);
});

test('every arch range table names only known types and lies in canonical space', () => {
  for (const arch of Object.values(ARCHES)) {
    const table = arch.execmemRanges(arch.layout.modules.start, false);
    assert.ok(table.module_text, `${arch.name} must define EXECMEM_DEFAULT (module_text)`);
    for (const [type, r] of Object.entries(table)) {
      assert.ok((EXECMEM_TYPES as readonly string[]).includes(type));
      assert.ok(r.range.start < r.range.end, `${arch.name}.${type} range is empty`);
    }
  }
});

test('alignUp is exact above 2^32', () => {
  assert.equal(alignUp(0xffffa0000001, 4096), 0xffffa0001000);
});
