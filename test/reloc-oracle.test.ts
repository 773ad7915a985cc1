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
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ExecmemType } from '../src/arch/types.js';
import { parseElf, SHT_NOBITS } from '../src/consumers/modules/elf.js';
import { layoutModule } from '../src/consumers/modules/layout.js';
import { ModuleLoadError, ModuleLoader, toSigned } from '../src/consumers/modules/loader.js';
import { KernelSymbols, signedToHex } from '../src/consumers/modules/symbols.js';
import type { ExecAllocator } from '../src/policies/types.js';
import { compileFixture, hasTool } from './helpers/toolchain.js';

const hasTools = ['gcc', 'ld', 'objcopy'].every(hasTool);

/** Plain-memory ExecAllocator: page-aligned bump allocation in the x86-64 module area, bytes kept. */
class PlainAllocator implements ExecAllocator {
  readonly name = 'test-plain';
  readonly live = new Map<number, { type: ExecmemType; bytes: Uint8Array; final: boolean }>();
  private next: number;
  constructor(startVa: number) {
    this.next = startVa;
  }
  alloc(type: ExecmemType, sizeBytes: number): number {
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    this.live.set(va, { type, bytes: new Uint8Array(sizeBytes), final: false });
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    const a = this.live.get(va);
    assert.ok(a && !a.final && bytes.length <= a.bytes.length, 'write to a live, unfinalized allocation');
    a.bytes.set(bytes);
  }
  finalize(va: number): void {
    this.live.get(va)!.final = true;
  }
  seal(): void {}
  free(va: number): void {
    assert.ok(this.live.delete(va));
  }
  shrink(): void {}
  usage() {
    let liveBytes = 0;
    for (const a of this.live.values()) liveBytes += a.bytes.length;
    return { liveBytes, mappedBytes: liveBytes };
  }
}

const SYMS: Record<string, string> = {
  kernel_counter: 'ffffffff82345678',
  kernel_func: 'ffffffff81234560',
  low_sym: '0000000000012340',
};

function systemMap(syms: Record<string, string>): string {
  const lines = ['0000000000000000 D __per_cpu_start', '0000000000020000 D __per_cpu_end'];
  let entry = 0xffffffff82000000n;
  for (const [name, addr] of Object.entries(syms)) {
    lines.push(`${addr} T ${name}`);
    lines.push(`${entry.toString(16)} r __ksymtab_${name}`);
    entry += 12n;
  }
  return `${lines.join('\n')}\n`;
}

let dir = '';
let objPath = '';

function linkWithLd(
  sectionAddrs: Map<string, number>,
  syms: Record<string, string>,
): { ok: boolean; stderr: string; out: string } {
  const lines = ['SECTIONS {'];
  let i = 0;
  const outNames = new Map<string, string>();
  for (const [name, addr] of sectionAddrs) {
    const out = `s${i++}`;
    outNames.set(name, out);
    lines.push(`  ${out} 0x${signedToHex(addr)} : { *(${name}) }`);
  }
  lines.push('  /DISCARD/ : { *(.comment) *(.note.GNU-stack) }', '}');
  const script = join(dir, 'link.ld');
  writeFileSync(script, lines.join('\n'));
  const out = join(dir, 'out.elf');
  const defsyms = Object.entries(syms).map(([n, a]) => `--defsym=${n}=0x${a}`);
  const r = spawnSync(
    'ld',
    ['-nostdlib', '-static', '--no-relax', '-e', '0', '-T', script, ...defsyms, '-o', out, objPath],
    {
      encoding: 'utf8',
    },
  );
  return {
    ok: r.status === 0,
    stderr: r.stderr,
    out: [...outNames.entries()].map(([k, v]) => `${k}=${v}`).join(','),
  };
}

function ldSection(outIndex: number): Uint8Array {
  const bin = join(dir, `s${outIndex}.bin`);
  execFileSync('objcopy', ['-O', 'binary', `--only-section=s${outIndex}`, join(dir, 'out.elf'), bin]);
  return new Uint8Array(readFileSync(bin));
}

function loadFixture(syms: Record<string, string>, checkPc32 = true) {
  const bytes = new Uint8Array(readFileSync(objPath));
  const kernel = KernelSymbols.fromSystemMap(systemMap(syms));
  const allocator = new PlainAllocator(0xffffc0001000);
  const loader = new ModuleLoader({ allocator, kernel, checkPc32 });
  return { bytes, allocator, loader };
}

describe('relocation oracle (gcc + GNU ld)', {
  skip: hasTools ? false : 'gcc/ld/objcopy not installed',
}, () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'execmem-reloc-'));
    objPath = join(dir, 'relocs.o');
    compileFixture('relocs.c', objPath);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

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
    const link = linkWithLd(addrs, SYMS);
    assert.ok(link.ok, `ld failed: ${link.stderr}`);
    let compared = 0;
    let i = 0;
    for (const name of addrs.keys()) {
      const s = elf.sections.find((x) => x.name === name)!;
      const p = layout.placement[s.index]!;
      const ours = allocator.live
        .get(mod.mems[p.memType]!.va)!
        .bytes.subarray(p.offset, p.offset + s.sizeBytes);
      if (s.type !== SHT_NOBITS) {
        assert.deepEqual(
          Buffer.from(ours).toString('hex'),
          Buffer.from(ldSection(i)).toString('hex'),
          `section ${name}`,
        );
        compared++;
      }
      i++;
    }
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
    const link = linkWithLd(new Map([['.text', -0x40000000 + 0x1000]]), far);
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
