/**
 * Oracle test for relocations: GNU ld is the reference.
 *
 * test/fixtures/c/relocs.c is compiled with gcc in kernel style, loaded by our loader (at the
 * addresses a small in-test allocator hands out), and the same object is linked by GNU ld with
 * a linker script that puts every section at exactly the address our loader chose and every
 * external symbol (from a fake System.map) at its address (--defsym). Every loaded section image
 * must equal ld's output byte for byte. The fixture covers every relocation type the loader
 * supports (NONE, 64, PC32, PLT32, 32, 32S, PC64), cross-memory-type references (text -> data,
 * rodata -> text, init text -> text) and ro_after_init. Overflow cases must fail in both: ld with
 * "relocation truncated to fit", the loader with Linux's message.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseElf } from '../src/consumers/modules/elf.js';
import { layoutModule } from '../src/consumers/modules/layout.js';
import { ModuleLoadError, ModuleLoader, toSigned } from '../src/consumers/modules/loader.js';
import { KernelSymbols } from '../src/consumers/modules/symbols.js';
import { LdOracle, PlainAllocator, systemMap } from './helpers/ld-oracle.js';
import { compileFixture, hasTool } from './helpers/toolchain.js';

const hasTools = ['gcc', 'ld', 'objcopy'].every(hasTool);

const SYMS: Record<string, string> = {
  kernel_counter: 'ffffffff82345678',
  kernel_func: 'ffffffff81234560',
  low_sym: '0000000000012340',
};

let oracle: LdOracle;

function loadFixture(syms: Record<string, string>, checkPc32 = true) {
  const bytes = new Uint8Array(readFileSync(oracle.objPath));
  const kernel = KernelSymbols.fromSystemMap(systemMap(syms, 0xffffffff82000000n));
  const allocator = new PlainAllocator(0xffffc0001000);
  const loader = new ModuleLoader({ allocator, kernel, checkPc32 });
  return { bytes, allocator, loader };
}

describe('relocation oracle (gcc + GNU ld)', {
  skip: hasTools ? false : 'gcc/ld/objcopy not installed',
}, () => {
  before(() => {
    const dir = mkdtempSync(join(tmpdir(), 'execmem-reloc-'));
    oracle = new LdOracle({ ld: 'ld', objcopy: 'objcopy', discard: [] }, dir, join(dir, 'relocs.o'));
    compileFixture('relocs.c', oracle.objPath);
  });
  after(() => rmSync(oracle.dir, { recursive: true, force: true }));

  it('loads every section byte-identical to ld at the same addresses', () => {
    const { bytes, allocator, loader } = loadFixture(SYMS);
    const mod = loader.load(bytes, 'relocs');
    const elf = parseElf(bytes);
    const layout = layoutModule(elf, 'oracle_fixture');
    const addrs = new Map<string, number>();
    for (const s of elf.sections) {
      const p = layout.placement[s.index];
      if (!p || s.sizeBytes === 0) continue;
      addrs.set(s.name, toSigned(mod.mems[p.memType]!.va) + p.offset);
    }
    const link = oracle.link(addrs, SYMS);
    assert.ok(link.ok, `ld failed: ${link.stderr}`);
    const compared = oracle.compareSections(addrs, elf, layout, mod.mems, allocator);
    assert.ok(compared >= 8, `compared ${compared} sections`);
    // Every supported type was exercised (and counted once per entry).
    for (const t of [
      'R_X86_64_NONE',
      'R_X86_64_64',
      'R_X86_64_PC32',
      'R_X86_64_PLT32',
      'R_X86_64_32',
      'R_X86_64_32S',
      'R_X86_64_PC64',
    ]) {
      assert.ok((mod.relocCounts[t] ?? 0) > 0, `${t} applied`);
    }
  });

  it('fails like ld when a kernel symbol is out of rel32 reach (PC32 overflow)', () => {
    const far = { ...SYMS, kernel_counter: 'ffff888000001000' }; // a direct-map address: > 2 GiB away
    const { bytes, allocator, loader } = loadFixture(far);
    assert.throws(
      () => loader.load(bytes, 'relocs'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'ENOEXEC' &&
        e.relocKind === 'overflow' &&
        /overflow in relocation type 2 val [0-9a-f]+/.test(e.message) &&
        e.message.includes("`oracle_fixture' likely not compiled with -mcmodel=kernel"),
    );
    assert.equal(allocator.live.size, 0, 'nothing left allocated after a failed load');
    assert.equal(loader.list().length, 0);
    const link = oracle.link(new Map([['.text', -0x40000000 + 0x1000]]), far);
    assert.equal(link.ok, false);
    assert.match(link.stderr, /relocation truncated to fit: R_X86_64_(PC32|32S)/);
  });

  it('without the PC32 check (as Linux), the absolute R_X86_64_32S still overflows with Linux message', () => {
    const far = { ...SYMS, kernel_counter: 'ffff888000001000' };
    const { bytes, loader } = loadFixture(far, false);
    assert.throws(
      () => loader.load(bytes, 'relocs'),
      (e: unknown) =>
        e instanceof ModuleLoadError && /overflow in relocation type 11 val ffff888000001000/.test(e.message),
    );
  });

  it('R_X86_64_32 overflows when the symbol is above 4 GiB', () => {
    const high = { ...SYMS, low_sym: '0000000100000000' };
    const { bytes, loader } = loadFixture(high);
    assert.throws(
      () => loader.load(bytes, 'relocs'),
      (e: unknown) =>
        e instanceof ModuleLoadError && /overflow in relocation type 10 val 100000004/.test(e.message),
    );
  });
});
