/**
 * The GNU ld oracle shared by the relocation tests of both arches (test/reloc-oracle.test.ts,
 * test/reloc-oracle-arm64.test.ts): a plain-memory allocator for the loader, a System.map for the
 * fixture's kernel symbols, and ld linking the same object with every section at the address our
 * loader gave it, so each section's bytes can be compared byte for byte.
 *
 * Why one helper: the two arches differ only in their toolchain names, which sections ld must drop
 * (arm64's PLT sections are the loader's own) and ld's extra flags; the linking and the comparison
 * are the same, and a fix to one must reach the other.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ExecmemType } from '../../src/arch/types.js';
import { type ElfFile, SHT_NOBITS } from '../../src/consumers/modules/elf.js';
import type { ModuleLayout } from '../../src/consumers/modules/layout.js';
import { signedToHex } from '../../src/consumers/modules/symbols.js';
import type { ExecAllocator } from '../../src/policies/types.js';

/**
 * Plain-memory ExecAllocator: page-aligned bump allocation from `startVa` with a guard page
 * between allocations. The bytes written are kept (bytesOf) unless `keepBytes` is false, for
 * tests that load a whole package of modules and only need the addresses.
 */
export class PlainAllocator implements ExecAllocator {
  readonly name = 'test-plain';
  readonly live = new Map<
    number,
    { type: ExecmemType; sizeBytes: number; bytes: Uint8Array | null; final: boolean }
  >();
  private next: number;
  constructor(
    startVa: number,
    private readonly options: { keepBytes?: boolean } = {},
  ) {
    this.next = startVa;
  }
  alloc(type: ExecmemType, sizeBytes: number): number {
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    const bytes = this.options.keepBytes === false ? null : new Uint8Array(sizeBytes);
    this.live.set(va, { type, sizeBytes, bytes, final: false });
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    const a = this.live.get(va);
    assert.ok(a && !a.final && bytes.length <= a.sizeBytes, 'write to a live, unfinalized allocation');
    a.bytes?.set(bytes);
  }
  /** The bytes written to the live allocation at `va` (allocators that keep them). */
  bytesOf(va: number): Uint8Array {
    const bytes = this.live.get(va)?.bytes;
    assert.ok(bytes, `no kept bytes at 0x${va.toString(16)}`);
    return bytes;
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
    for (const a of this.live.values()) liveBytes += a.sizeBytes;
    return { liveBytes, mappedBytes: liveBytes };
  }
}

/** A System.map with `syms` (name -> 16 hex digits) and a __ksymtab_ entry each from `ksymtabVa`. */
export function systemMap(syms: Record<string, string>, ksymtabVa: bigint): string {
  const lines = ['0000000000000000 D __per_cpu_start', '0000000000020000 D __per_cpu_end'];
  let entry = ksymtabVa;
  for (const [name, addr] of Object.entries(syms)) {
    lines.push(`${addr} T ${name}`, `${entry.toString(16)} r __ksymtab_${name}`);
    entry += 12n;
  }
  return `${lines.join('\n')}\n`;
}

export interface LdTools {
  readonly ld: string;
  readonly objcopy: string;
  /** Input sections ld drops besides .comment and .note.GNU-stack. */
  readonly discard: readonly string[];
}

/** ld over one object in `dir`: output section `s<i>` is the i-th input section named to link(). */
export class LdOracle {
  constructor(
    readonly tools: LdTools,
    readonly dir: string,
    readonly objPath: string,
  ) {}

  /** Link with each named section at its address; `extra` are more ld flags. */
  link(sectionAddrs: Map<string, number>, syms: Record<string, string>, extra: readonly string[] = []) {
    const lines = ['SECTIONS {'];
    let i = 0;
    for (const [name, addr] of sectionAddrs) lines.push(`  s${i++} 0x${signedToHex(addr)} : { *(${name}) }`);
    const drop = ['.comment', '.note.GNU-stack', ...this.tools.discard].map((s) => `*(${s})`).join(' ');
    lines.push(`  /DISCARD/ : { ${drop} }`, '}');
    const script = join(this.dir, 'link.ld');
    writeFileSync(script, lines.join('\n'));
    const out = join(this.dir, 'out.elf');
    const defsyms = Object.entries(syms).map(([n, a]) => `--defsym=${n}=0x${a}`);
    const r = spawnSync(
      this.tools.ld,
      [
        '-nostdlib',
        '-static',
        '--no-relax',
        ...extra,
        '-e',
        '0',
        '-T',
        script,
        ...defsyms,
        '-o',
        out,
        this.objPath,
      ],
      { encoding: 'utf8' },
    );
    return { ok: r.status === 0, stderr: r.stderr, out };
  }

  /** The bytes ld put in output section `s<outIndex>` of the last link. */
  section(outIndex: number): Uint8Array {
    const bin = join(this.dir, `s${outIndex}.bin`);
    execFileSync(this.tools.objcopy, [
      '-O',
      'binary',
      `--only-section=s${outIndex}`,
      join(this.dir, 'out.elf'),
      bin,
    ]);
    return new Uint8Array(readFileSync(bin));
  }

  /**
   * Assert every loaded section with contents (and a name `only` accepts) holds what ld put at the
   * same address (sections in the order link() was given them); returns how many were compared.
   */
  compareSections(
    addrs: Map<string, number>,
    elf: ElfFile,
    layout: ModuleLayout,
    mems: Readonly<Record<string, { va: number } | undefined>>,
    allocator: PlainAllocator,
    only: (name: string) => boolean = () => true,
  ): number {
    let compared = 0;
    let i = 0;
    for (const name of addrs.keys()) {
      const s = elf.sections.find((x) => x.name === name)!;
      const p = layout.placement[s.index]!;
      const ours = allocator.bytesOf(mems[p.memType]!.va).subarray(p.offset, p.offset + s.sizeBytes);
      if (s.type !== SHT_NOBITS && only(name)) {
        assert.equal(
          Buffer.from(ours).toString('hex'),
          Buffer.from(this.section(i)).toString('hex'),
          `section ${name}`,
        );
        compared++;
      }
      i++;
    }
    return compared;
  }
}
