/**
 * The ELF reader and the loader's input validation: named corruptions give the named typed
 * error, and fast-check mutations of real module bytes never produce anything but a typed error
 * (ElfError from the reader, ModuleLoadError from the loader) and never leave memory allocated.
 *
 * Inputs: a gcc-compiled kernel-style object (test/fixtures/c/relocs.c, always), and the
 * smallest .ko of the Debian dataset when it is in the cache (skipped with a note otherwise).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { ExecmemType } from '../src/arch/types.js';
import {
  ElfError,
  parseElf,
  parseModinfo,
  SHT_RELA,
  SHT_SYMTAB,
  stripModuleSignature,
} from '../src/consumers/modules/elf.js';
import { ModuleLoadError, ModuleLoader } from '../src/consumers/modules/loader.js';
import { KernelSymbols } from '../src/consumers/modules/symbols.js';
import type { ExecAllocator } from '../src/policies/types.js';
import {
  datasetKernelSymbols,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';
import { withTempDir } from './helpers/tempdir.js';
import { compileFixture, FAKE_SYSTEM_MAP, hasTool } from './helpers/toolchain.js';

const hasGcc = hasTool('gcc');

class PlainAllocator implements ExecAllocator {
  readonly name = 'test-plain';
  readonly live = new Map<number, { type: ExecmemType; sizeBytes: number }>();
  private next = 0xffffc0001000;
  alloc(type: ExecmemType, sizeBytes: number): number {
    assert.ok(Number.isInteger(sizeBytes) && sizeBytes > 0, `size ${sizeBytes}`);
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    this.live.set(va, { type, sizeBytes });
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    assert.ok(bytes.length <= this.live.get(va)!.sizeBytes);
  }
  finalize(): void {}
  seal(): void {}
  free(va: number): void {
    assert.ok(this.live.delete(va));
  }
  shrink(): void {}
  usage() {
    return { liveBytes: 0, mappedBytes: 0 };
  }
}

let dir = '';
let fixture = new Uint8Array(0);

function u16(b: Uint8Array, off: number, v: number): Uint8Array {
  const c = b.slice();
  new DataView(c.buffer).setUint16(off, v, true);
  return c;
}
function u32(b: Uint8Array, off: number, v: number): Uint8Array {
  const c = b.slice();
  new DataView(c.buffer).setUint32(off, v >>> 0, true);
  return c;
}
function shoff(b: Uint8Array): number {
  return Number(new DataView(b.buffer, b.byteOffset).getBigUint64(40, true));
}
function expectElf(b: Uint8Array, code: string, pattern?: RegExp): void {
  assert.throws(
    () => parseElf(b),
    (e: unknown) => e instanceof ElfError && e.code === code && (!pattern || pattern.test(e.message)),
    `expected ElfError ${code}`,
  );
}

describe('ELF reader: named corruptions', { skip: hasGcc ? false : 'gcc not installed' }, () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'execmem-elf-'));
    compileFixture('relocs.c', join(dir, 'relocs.o'));
    fixture = new Uint8Array(readFileSync(join(dir, 'relocs.o')));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('parses the gcc object: sections, symbols, modinfo', () => {
    const elf = parseElf(fixture);
    assert.ok(elf.sections.some((s) => s.name === '.text'));
    assert.ok(elf.sections.some((s) => s.type === SHT_SYMTAB));
    assert.ok(elf.symbols.some((s) => s.name === 'fixture_entry' && s.type === 2 && s.sizeBytes > 0));
    assert.deepEqual(parseModinfo(elf).get('name'), ['oracle_fixture']);
  });

  it('header problems', () => {
    expectElf(new Uint8Array(0), 'ETRUNC');
    expectElf(fixture.subarray(0, 63), 'ETRUNC');
    expectElf(u32(fixture, 0, 0x464c457e), 'EMAGIC');
    expectElf(u16(fixture, 4, 0x0101), 'ECLASS'); // ELFCLASS32
    expectElf(u16(fixture, 16, 2), 'ETYPE', /Invalid ELF header type: 2/);
    expectElf(u16(fixture, 18, 3), 'EMACHINE');
    expectElf(u16(fixture, 58, 40), 'ESHDR', /section header size/);
    expectElf(u32(fixture, 40, fixture.length - 10), 'ETRUNC', /section header overflow/);
    const shnum = new DataView(fixture.buffer).getUint16(60, true);
    expectElf(u16(fixture, 62, shnum), 'ESHDR', /e_shstrndx/);
    expectElf(u16(fixture, 60, 0), 'ESHDR');
  });

  it('section problems', () => {
    const elf = parseElf(fixture);
    const base = shoff(fixture);
    const text = elf.sections.find((s) => s.name === '.text')!;
    expectElf(u32(fixture, base + text.index * 64 + 24, fixture.length), 'ETRUNC', /section 1/); // sh_offset
    expectElf(u32(fixture, base + text.index * 64 + 48, 3), 'ESHDR', /power of two/); // sh_addralign
    expectElf(u32(fixture, base + text.index * 64, 0xfffffff), 'ESTRTAB', /section name/);
    const shstr = elf.sections.find((s) => s.name === '.shstrtab')!;
    const c = fixture.slice();
    c[shstr.offset + shstr.sizeBytes - 1] = 0x41;
    expectElf(c, 'ESTRTAB', /null terminated/);
    expectElf(u32(fixture, base + 4, 1), 'ESHDR', /section 0/); // section 0 must be SHT_NULL
  });

  it('symbol table problems', () => {
    const elf = parseElf(fixture);
    const base = shoff(fixture);
    const symtab = elf.sections[elf.symtabIndex];
    expectElf(u32(fixture, base + symtab.index * 64 + 56, 16), 'ESYMTAB', /entry size/);
    expectElf(u32(fixture, base + symtab.index * 64 + 40, 999), 'ESYMTAB', /sh_link/);
    const sym1 = symtab.offset + 24;
    expectElf(u32(fixture, sym1, 0x7fffffff), 'ESTRTAB', /symbol 1/);
    expectElf(u16(fixture, sym1 + 6, 0xfe00), 'ESYMTAB', /section index/);
    const typed = fixture.slice();
    new DataView(typed.buffer).setUint32(base + symtab.index * 64 + 4, 1, true); // no symtab left
    expectElf(typed, 'ESYMTAB', /no symbols/);
  });

  it('relocation entries are checked when applied: typed error, nothing left allocated', () => {
    const elf = parseElf(fixture);
    const rela = elf.sections.find((s) => s.type === SHT_RELA && s.name === '.rela.text')!;
    const cases: [Uint8Array, RegExp][] = [
      [u32(fixture, rela.offset + 12, 100000), /symbol index 100000/],
      [u32(fixture, rela.offset, 0xfffff), /outside its/],
      [u32(fixture, rela.offset + 8, 37), /Unknown rela relocation: 37/],
    ];
    for (const [bytes, pattern] of cases) {
      const allocator = new PlainAllocator();
      const loader = new ModuleLoader({ allocator, kernel: KernelSymbols.fromSystemMap(FAKE_SYSTEM_MAP) });
      assert.throws(
        () => loader.load(bytes, 'x'),
        (e: unknown) => e instanceof ModuleLoadError && e.code === 'ENOEXEC' && pattern.test(e.message),
      );
      assert.equal(allocator.live.size, 0);
      assert.equal(loader.list().length, 0);
    }
  });

  it('strips an appended module signature exactly, and rejects a malformed one', () => {
    const sig = new Uint8Array(37).fill(0x30);
    const info = new Uint8Array(12);
    info[2] = 2; // PKEY_ID_PKCS7
    new DataView(info.buffer).setUint32(8, sig.length, false);
    const marker = new TextEncoder().encode('~Module signature appended~\n');
    const signed = new Uint8Array([...fixture, ...sig, ...info, ...marker]);
    const r = stripModuleSignature(signed);
    assert.equal(r.signed, true);
    assert.deepEqual(r.bytes, fixture);
    const bad = signed.slice();
    new DataView(bad.buffer).setUint32(fixture.length + sig.length + 8, 1 << 30, false);
    assert.throws(
      () => stripModuleSignature(bad),
      (e: unknown) => e instanceof ElfError && e.code === 'ESIG',
    );
  });
});

type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'u32'; at: number; value: number }
  | { kind: 'trunc'; at: number };

/** Mutations biased to the places that matter: header, section headers, symbols, relocations. */
function mutationArb(bytes: Uint8Array): fc.Arbitrary<Mutation[]> {
  const elf = parseElf(stripModuleSignature(bytes).bytes);
  const hot: [number, number][] = [
    [0, 64],
    [shoff(bytes), shoff(bytes) + elf.sections.length * 64],
  ];
  for (const s of elf.sections)
    if (s.type === SHT_SYMTAB || s.type === SHT_RELA)
      hot.push([s.offset, s.offset + Math.min(s.sizeBytes, 4096)]);
  const at = fc.oneof(
    fc.integer({ min: 0, max: bytes.length - 1 }),
    fc.constantFrom(...hot).chain(([lo, hi]) => fc.integer({ min: lo, max: Math.max(lo, hi - 4) })),
  );
  const interesting = fc.oneof(
    fc.constantFrom(0, 1, 0xffffffff, 0x80000000, 0x7fffffff, bytes.length, 24, 64),
    fc.nat(),
  );
  const m: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({ kind: fc.constant('byte' as const), at, value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('u32' as const), at, value: interesting }),
    fc.record({ kind: fc.constant('trunc' as const), at: fc.integer({ min: 0, max: bytes.length }) }),
  );
  return fc.array(m, { minLength: 1, maxLength: 4 });
}

function mutate(bytes: Uint8Array, ms: Mutation[]): Uint8Array {
  let b = bytes.slice();
  for (const m of ms) {
    if (m.kind === 'trunc') b = b.slice(0, Math.min(m.at, b.length));
    else if (m.kind === 'byte' && m.at < b.length) b[m.at] = m.value;
    else if (m.kind === 'u32' && m.at + 4 <= b.length)
      new DataView(b.buffer).setUint32(m.at, m.value >>> 0, true);
  }
  return b;
}

function fuzzLoad(bytes: Uint8Array, kernel: KernelSymbols, runs: number): void {
  const outcome = { loaded: 0, refused: 0 };
  fc.assert(
    fc.property(mutationArb(bytes), (ms) => {
      const input = mutate(bytes, ms);
      const allocator = new PlainAllocator();
      const loader = new ModuleLoader({ allocator, kernel });
      try {
        parseElf(stripModuleSignature(input).bytes);
      } catch (e) {
        if (!(e instanceof ElfError)) throw e;
      }
      try {
        const mod = loader.load(input, 'fuzz');
        loader.init(mod.name);
        loader.unload(mod.name);
        outcome.loaded++;
      } catch (e) {
        if (!(e instanceof ModuleLoadError)) throw e;
        outcome.refused++;
      }
      assert.equal(allocator.live.size, 0, 'no allocation survives a failed load or an unload');
      assert.equal(loader.list().length, 0);
    }),
    { numRuns: runs, seed: 42 },
  );
  // Both outcomes must occur, or the property was not exercised.
  assert.ok(
    outcome.loaded > 0 && outcome.refused > 0,
    `loaded ${outcome.loaded}, refused ${outcome.refused}`,
  );
}

describe('ELF + loader fuzz (fast-check mutations)', () => {
  it('gcc object: only typed errors, nothing leaked', { skip: hasGcc ? false : 'gcc not installed' }, () => {
    withTempDir('execmem-fuzz-', (d) => {
      compileFixture('relocs.c', join(d, 'r.o'));
      const bytes = new Uint8Array(readFileSync(join(d, 'r.o')));
      fuzzLoad(bytes, KernelSymbols.fromSystemMap(FAKE_SYSTEM_MAP), 400);
    });
  });

  const root = findCachedDataset();
  it('real Debian .ko: only typed errors, nothing leaked', {
    skip: root ? false : 'Debian dataset not in the cache (run: execmem dataset fetch)',
  }, () => {
    const index = openDataset(root!);
    const kernel = datasetKernelSymbols(index);
    // The smallest module that has no dependencies (so it loads on its own).
    const m = [...index.modules]
      .filter((x) => x.depends.length === 0)
      .sort((a, b) => a.fileBytes - b.fileBytes)[0];
    const bytes = readModuleFile(join(index.root, m.path));
    const loader = new ModuleLoader({ allocator: new PlainAllocator(), kernel });
    loader.load(bytes, m.name); // the unmutated file loads
    fuzzLoad(bytes, kernel, 300);
  });
});
