/**
 * Hostile .ko files cost work in proportion to their size (issue 16 item 3), and are refused
 * with ENOEXEC naming the section and the limit.
 *
 * The reproduction: a module whose .strtab is one 4 MB run ending in a single NUL, with 20,000
 * symbols named inside it. Decoding every name would scan about 80 GB (the process used to die
 * out of memory, or fail after ~40 s as "ENOMEM allocator refused"). It is rebuilt here from the
 * module elf-build.ts assembles (so it runs everywhere) and from crc7.ko, the file of the issue,
 * when the Debian dataset is in the cache. Bounds are asserted on work counters (bytes scanned,
 * relocation entries decoded) and heap growth, never on wall time.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { craftLongNames, craftLongSectionNames, rewriteSectionHeaders } from '../fuzz/elf-mutations.js';
import type { ExecmemType } from '../src/arch/types.js';
import { ElfError, parseElf, stripModuleSignature } from '../src/consumers/modules/elf.js';
import { sampleKernelSymbols, sampleModuleElf } from '../src/consumers/modules/elf-build.js';
import { ModuleLoadError, ModuleLoader } from '../src/consumers/modules/loader.js';
import {
  KSYM_NAME_LEN,
  NAME_BYTES_PER_FILE_BYTE,
  NAME_SLACK_BYTES,
  newParseStats,
} from '../src/consumers/modules/names.js';
import type { KernelSymbols } from '../src/consumers/modules/symbols.js';
import type { ExecAllocator } from '../src/policies/types.js';
import {
  datasetKernelSymbols,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';

const MIB = 1 << 20;

/** Counts every call; allocates from a private counter (never reached by a refused file). */
class CountingAllocator implements ExecAllocator {
  readonly name = 'counting';
  calls = 0;
  private next = 0xffffa0000000; // 48-bit form of 0xffffffffa0000000, the x86 module area
  alloc(_type: ExecmemType, sizeBytes: number): number {
    this.calls++;
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    return va;
  }
  write(): void {
    this.calls++;
  }
  finalize(): void {
    this.calls++;
  }
  seal(): void {
    this.calls++;
  }
  free(): void {
    this.calls++;
  }
  shrink(): void {}
  usage() {
    return { liveBytes: 0, mappedBytes: 0 };
  }
}

function budgetOf(fileBytes: number): number {
  return fileBytes * NAME_BYTES_PER_FILE_BYTE + NAME_SLACK_BYTES;
}

/** Load `bytes`, expecting ENOEXEC from the parser; returns the error and the work counters. */
function expectRefused(bytes: Uint8Array, kernel: KernelSymbols, name: string, pattern: RegExp) {
  const allocator = new CountingAllocator();
  const parse = newParseStats();
  const loader = new ModuleLoader({ allocator, kernel, parseStats: parse });
  const heapBefore = process.memoryUsage().heapUsed;
  let err: unknown = null;
  try {
    loader.load(bytes, name);
  } catch (e) {
    err = e;
  }
  const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
  assert.ok(err instanceof ModuleLoadError, `a ModuleLoadError, got ${String(err)}`);
  assert.equal(err.code, 'ENOEXEC');
  assert.equal(err.source, 'elf');
  assert.match(err.message, pattern);
  assert.ok(err.message.includes(name), 'the message names the module');
  assert.equal(allocator.calls, 0, 'the allocator is never called');
  assert.equal(loader.list().length, 0);
  assert.ok(heapGrowth < 64 * MIB, `heap grew ${(heapGrowth / MIB).toFixed(1)} MiB`);
  return { err, parse };
}

describe('hostile string tables: bounded work, ENOEXEC naming section and limit', () => {
  const sample = sampleModuleElf('crafted');
  const kernel = sampleKernelSymbols();

  it('issue 16 item 3: .strtab = one 4 MB run, 20,000 symbols inside it (built-in module)', () => {
    const crafted = craftLongNames(sample, { runBytes: 4 * MIB, symbols: 20_000 });
    assert.ok(crafted.length > 4 * MIB);
    const { parse } = expectRefused(
      crafted,
      kernel,
      'crafted',
      /symbol 1 name in section \d+ \(\.strtab\): string at offset \d+ is longer than KSYM_NAME_LEN - 1 = 511 characters/,
    );
    // The first symbol name stops the parse after KSYM_NAME_LEN bytes (plus the section names).
    assert.ok(parse.nameBytesScanned <= KSYM_NAME_LEN + 1024, `scanned ${parse.nameBytesScanned}`);
    assert.ok(parse.nameBytesScanned <= budgetOf(crafted.length));
    // The parser alone says the same, with the same bound.
    const stats = newParseStats();
    assert.throws(
      () => parseElf(crafted, { stats }),
      (e: unknown) => e instanceof ElfError && e.code === 'ESTRTAB' && /KSYM_NAME_LEN/.test(e.message),
    );
    assert.equal(stats.nameBytesScanned, parse.nameBytesScanned);
  });

  const root = findCachedDataset();
  it('issue 16 item 3 on the real crc7.ko', {
    skip: root ? false : 'Debian dataset not in the cache (run: execmem dataset fetch)',
  }, () => {
    const index = openDataset(root!);
    const crc7 = index.modules.find((m) => m.name === 'crc7');
    assert.ok(crc7, 'crc7 is in the package');
    const bytes = stripModuleSignature(readModuleFile(join(index.root, crc7.path))).bytes;
    const crafted = craftLongNames(bytes, { runBytes: 4 * MIB, symbols: 20_000 });
    const { parse } = expectRefused(
      crafted,
      datasetKernelSymbols(index),
      'crc7',
      /\(\.strtab\).*KSYM_NAME_LEN/,
    );
    assert.ok(parse.nameBytesScanned <= budgetOf(crafted.length));
  });

  it('names under KSYM_NAME_LEN at 20,000 offsets hit the per-file budget, not the machine', () => {
    // Every name 1..511 characters: each is allowed, their sum (about 5 MB) is not.
    const crafted = craftLongNames(sample, { runBytes: 64 << 10, symbols: 20_000, tailChars: 511 });
    const { parse } = expectRefused(crafted, kernel, 'crafted', /more than the \d+-byte parse budget/);
    assert.ok(parse.nameBytesScanned <= budgetOf(crafted.length), `scanned ${parse.nameBytesScanned}`);
  });

  it('section names in one long run, 5,000 extra sections: bounded by the same budget', () => {
    const crafted = craftLongSectionNames(sample, MIB, 5000);
    const { parse } = expectRefused(crafted, kernel, 'crafted', /section \d+ name in section \d+/);
    assert.ok(parse.nameBytesScanned <= budgetOf(crafted.length), `scanned ${parse.nameBytesScanned}`);
  });

  it('a string table without any NUL, and names pointing outside, are refused (ESTRTAB)', () => {
    const elf = parseElf(sample);
    const strtab = elf.sections[elf.sections[elf.symtabIndex].link];
    const noNul = sample.slice();
    noNul.fill(0x41, strtab.offset, strtab.offset + strtab.sizeBytes);
    expectRefused(noNul, kernel, 'crafted', /not NUL-terminated inside its table/);
    const outside = sample.slice();
    const sym1 = elf.sections[elf.symtabIndex].offset + 24;
    new DataView(outside.buffer).setUint32(sym1, strtab.sizeBytes + 5, true);
    expectRefused(outside, kernel, 'crafted', /symbol 1: name offset \d+ outside the string table/);
  });

  it('30,000 copies of one RELA section cannot multiply relocation work (refused before allocating)', () => {
    const elf = parseElf(sample);
    const rela = elf.sections.find((s) => s.name === '.rela.text')!;
    const repeated = rewriteSectionHeaders(sample, (h) => [
      ...h,
      ...Array.from({ length: 30_000 }, () => h[rela.index].slice()),
    ]);
    const allocator = new CountingAllocator();
    const parse = newParseStats();
    const loader = new ModuleLoader({ allocator, kernel, parseStats: parse });
    assert.throws(
      () => loader.load(repeated, 'repeated'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'ENOEXEC' &&
        e.source === 'relocation' &&
        /relocation sections hold \d+ bytes, more than the \d+-byte file: sections overlap/.test(e.message),
    );
    assert.equal(allocator.calls, 0);
    assert.equal(parse.relocEntries, 0, 'no entry decoded: the total was checked first');
  });

  it('a well-formed module scans far less than the budget (the limits leave real files alone)', () => {
    const parse = newParseStats();
    const loader = new ModuleLoader({ allocator: new CountingAllocator(), kernel, parseStats: parse });
    loader.load(sample, 'crafted');
    assert.ok(
      parse.nameBytesScanned < sample.length,
      `scanned ${parse.nameBytesScanned} of ${sample.length}`,
    );
    assert.ok(parse.relocEntries <= 2 * (sample.length / 24));
  });
});
