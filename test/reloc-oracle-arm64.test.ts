/**
 * Oracle test for AArch64 relocations and module PLTs: GNU ld (binutils-aarch64-linux-gnu) is
 * the reference, as test/reloc-oracle.test.ts does for x86-64.
 *
 * test/fixtures/c/relocs-arm64.c holds every relocation type 6.1's apply_relocate_add() has a
 * case for (37, the MOVW family included); it is compiled with aarch64-linux-gnu-gcc, loaded by
 * our loader at the addresses a small allocator hands out, and linked by aarch64-linux-gnu-ld
 * with a script putting each section exactly where the loader put it and each kernel symbol
 * (--defsym) where the fake System.map says. Every loaded section must equal ld's output byte
 * for byte. The PLT placeholders (.plt, .init.plt, .text.ftrace_trampoline) are Linux's, not
 * ld's business, and are left out of ld's link.
 *
 * PLTs: with the kernel more than 128 MiB away, every CALL26/JUMP26 to it must go through a
 * PLT entry (ADRP x16 / ADD x16 / BR x16) that reaches the symbol: checked by decoding the
 * branch and the entry, and the entry count against module_frob_arch_sections()'s rules. ld
 * does the same job with its own veneers (another place, so no byte comparison there): its
 * branch too is checked to end at the symbol. Overflow cases fail in both: ld "relocation
 * truncated to fit", the loader with Linux's message naming module, section, offset and type,
 * with nothing left allocated.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseElf } from '../src/consumers/modules/elf.js';
import { layoutModule } from '../src/consumers/modules/layout.js';
import { ModuleLoadError, ModuleLoader, toSigned } from '../src/consumers/modules/loader.js';
import { frobArm64Sections, PLT_ENTRY_BYTES } from '../src/consumers/modules/plt-arm64.js';
import { KernelSymbols } from '../src/consumers/modules/symbols.js';
import { LdOracle, PlainAllocator, systemMap } from './helpers/ld-oracle.js';
import { FIXTURES_C, hasTool } from './helpers/toolchain.js';

const GCC = 'aarch64-linux-gnu-gcc';
const LD = 'aarch64-linux-gnu-ld';
const OBJCOPY = 'aarch64-linux-gnu-objcopy';
const hasTools = [GCC, LD, OBJCOPY].every(hasTool);

/** Kernel-style arm64 flags (arch/arm64/Makefile: -mgeneral-regs-only; modules are not PIC). */
const ARM64_CFLAGS = [
  '-O2',
  '-fno-pic',
  '-mgeneral-regs-only',
  '-ffreestanding',
  '-fno-asynchronous-unwind-tables',
  '-fno-common',
  '-c',
];

/** The arm64 kernel image in our layout starts at 0xffff800080000000 (src/arch/arm64.ts). */
const SYMS: Record<string, string> = {
  kernel_counter: 'ffff800081a3c468',
  kernel_func: 'ffff800080b9ed38',
  small_sym: '0000000000001234',
  mid_sym: '00000000abcd0000',
  neg_sym: 'fffffffffffff000',
};
/** Module memory 64 MiB below the kernel image: in CALL26 reach of kernel_func. */
const NEAR_VA = 0x800080000000 - 64 * 1024 * 1024;
/** 1 GiB below: out of CALL26 reach (PLTs), in ADRP reach. */
const FAR_VA = 0x800080000000 - 1024 * 1024 * 1024;

let oracle: LdOracle;
const PLT_SECTIONS = ['.plt', '.init.plt', '.text.ftrace_trampoline'];
/**
 * ld appends its veneers to .text's output section, which then runs into the next section at our
 * address; --no-check-sections lets it (each output section keeps its own bytes).
 */
const VENEER_FLAGS = ['--no-check-sections'];

function load(syms: Record<string, string>, startVa: number) {
  const bytes = new Uint8Array(readFileSync(oracle.objPath));
  const kernel = KernelSymbols.fromSystemMap(systemMap(syms, 0xffff800082000000n));
  const allocator = new PlainAllocator(startVa);
  const loader = new ModuleLoader({ allocator, kernel, arch: 'arm64' });
  return { bytes, allocator, loader };
}

/** Where each loaded section of the fixture is, after frob and layout as the loader did them. */
function sectionAddrs(bytes: Uint8Array, mems: Record<string, { va: number } | undefined>) {
  const elf = frobArm64Sections(parseElf(bytes, { machine: 183 }), 'oracle_fixture_arm64').elf;
  const layout = layoutModule(elf, 'oracle_fixture_arm64');
  const addrs = new Map<string, number>();
  for (const s of elf.sections) {
    const p = layout.placement[s.index];
    if (!p || s.sizeBytes === 0 || PLT_SECTIONS.includes(s.name)) continue;
    addrs.set(s.name, toSigned(mems[p.memType]!.va) + p.offset);
  }
  return { elf, layout, addrs };
}

/** Where a B/BL at `pc` (signed) goes. */
function branchTarget(word: number, pc: number): number {
  const imm = word & 0x3ffffff;
  return pc + (imm >= 0x2000000 ? imm - 0x4000000 : imm) * 4;
}

/** Where an ADRP x16 / ADD x16 / BR x16 sequence at `pc` goes (null if it is not one). */
function veneerTarget(w: [number, number, number], pc: number): number | null {
  if (
    (w[0] & 0x9f00001f) >>> 0 !== 0x90000010 ||
    (w[1] & 0xffc003ff) >>> 0 !== 0x91000210 ||
    w[2] !== 0xd61f0200
  )
    return null;
  const immlo = (w[0] >>> 29) & 3;
  const immhi = (w[0] >>> 5) & 0x7ffff;
  let pages = (immhi << 2) | immlo;
  if (pages >= 1 << 20) pages -= 1 << 21;
  return Math.floor(pc / 4096) * 4096 + pages * 4096 + ((w[1] >>> 10) & 0xfff);
}

describe('AArch64 relocation oracle (aarch64-linux-gnu-gcc + GNU ld)', {
  skip: hasTools
    ? false
    : `${GCC}/${LD}/${OBJCOPY} not installed (apt-get install gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu)`,
}, () => {
  before(() => {
    const dir = mkdtempSync(join(tmpdir(), 'execmem-reloc-a64-'));
    oracle = new LdOracle(
      { ld: LD, objcopy: OBJCOPY, discard: PLT_SECTIONS },
      dir,
      join(dir, 'relocs-arm64.o'),
    );
    execFileSync(GCC, [...ARM64_CFLAGS, join(FIXTURES_C, 'relocs-arm64.c'), '-o', oracle.objPath]);
  });
  after(() => rmSync(oracle.dir, { recursive: true, force: true }));

  it('loads every section byte-identical to ld at the same addresses, every type applied', () => {
    const { bytes, allocator, loader } = load(SYMS, NEAR_VA);
    const mod = loader.load(bytes, 'relocs-arm64');
    assert.equal(mod.pltEntries, 0, 'everything in reach: no PLT entry');
    const { elf, layout, addrs } = sectionAddrs(bytes, mod.mems);
    const link = oracle.link(addrs, SYMS);
    assert.ok(link.ok, `ld failed: ${link.stderr}`);
    const compared = oracle.compareSections(addrs, elf, layout, mod.mems, allocator);
    assert.ok(compared >= 9, `compared ${compared} sections`);
    const types = Object.keys(mod.relocCounts);
    assert.equal(types.length, 37, `37 types applied, got ${types.join(' ')}`);
  });

  it('beyond 128 MiB every branch to the kernel goes through a PLT entry that reaches it, as through ld veneers', () => {
    const { bytes, allocator, loader } = load(SYMS, FAR_VA);
    const mod = loader.load(bytes, 'relocs-arm64');
    // Branches to kernel_func: bl in .text, bl and b in .text.relocs, bl in .init.text (gcc
    // inlined fixture_entry there). Emitted: .text's bl makes core entry 0; in .text.relocs the
    // sorted order (JUMP26 = 282 before CALL26 = 283) meets kernel_func again, the same target
    // as the last entry, so entry 0 is reused (plt_entries_equal()); .init.text gets its own
    // entry in .init.plt. Two entries in all, where the count reserved 4 + 1.
    assert.equal(mod.pltEntries, 2);
    const text = mod.mems.text!;
    const img = allocator.bytesOf(text.va);
    const view = new DataView(img.buffer, img.byteOffset, img.byteLength);
    const { elf, layout, addrs } = sectionAddrs(bytes, mod.mems);
    const kernelFunc = Number(BigInt.asIntN(64, BigInt(`0x${SYMS.kernel_func}`)));
    const relocs = layout.placement[elf.sections.find((s) => s.name === '.text.relocs')!.index]!;
    const base = toSigned(text.va);
    for (const k of [0, 1]) {
      const pc = base + relocs.offset + k * 4;
      const to = branchTarget(view.getUint32(relocs.offset + k * 4, true), pc);
      const plt = layout.placement[elf.sections.find((s) => s.name === '.plt')!.index]!;
      assert.ok(
        to >= base + plt.offset && to < base + plt.offset + 4 * PLT_ENTRY_BYTES,
        'branch lands in .plt',
      );
      const o = to - base;
      const words: [number, number, number] = [
        view.getUint32(o, true),
        view.getUint32(o + 4, true),
        view.getUint32(o + 8, true),
      ];
      assert.equal(veneerTarget(words, to), kernelFunc, 'the PLT entry reaches kernel_func');
    }
    // ld, linking the same placement, resolves the far branches with its own veneers.
    const link = oracle.link(addrs, SYMS, VENEER_FLAGS);
    assert.ok(link.ok, `ld failed: ${link.stderr}`);
    const names = [...addrs.keys()];
    const ldRelocs = oracle.section(names.indexOf('.text.relocs'));
    const ldView = new DataView(ldRelocs.buffer, ldRelocs.byteOffset, ldRelocs.byteLength);
    const pc0 = addrs.get('.text.relocs')!;
    const ldTo = branchTarget(ldView.getUint32(0, true), pc0);
    const nm = spawnSync(`${LD.replace(/ld$/, 'nm')}`, [link.out], { encoding: 'utf8' }).stdout;
    assert.match(nm, /kernel_func_veneer/, 'ld emitted a veneer');
    const veneers = nm
      .split('\n')
      .filter((l) => l.endsWith('kernel_func_veneer'))
      .map((l) => Number(BigInt.asIntN(64, BigInt(`0x${l.split(' ')[0]}`))));
    assert.ok(veneers.includes(ldTo), 'ld branches to one of its kernel_func veneers');
    // Nothing else differs: every section but the code (where the far branches are) is identical.
    oracle.compareSections(addrs, elf, layout, mod.mems, allocator, (name) => !name.includes('text'));
  });

  it('an ADRP beyond 4 GiB overflows like ld, naming module, section, offset and type; nothing stays allocated', () => {
    const far = { ...SYMS, kernel_counter: 'ffff900000000000' };
    const { bytes, allocator, loader } = load(far, NEAR_VA);
    assert.throws(
      () => loader.load(bytes, 'relocs-arm64'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'ENOEXEC' &&
        e.relocKind === 'overflow' &&
        /module oracle_fixture_arm64: overflow in relocation type 275 val ffff900000000000 at \.text\+0x[0-9a-f]+ \(\.rela\.text\[\d+\], R_AARCH64_ADR_PREL_PG_HI21\)/.test(
          e.message,
        ),
    );
    assert.equal(allocator.live.size, 0, 'nothing left allocated after a failed load');
    assert.equal(loader.list().length, 0);
    const link = oracle.link(new Map([['.text', toSigned(NEAR_VA)]]), far);
    assert.equal(link.ok, false);
    assert.match(link.stderr, /relocation truncated to fit: R_AARCH64_ADR_PREL_PG_HI21/);
  });

  it('refuses a module without PLT sections as Linux does, allocating nothing', () => {
    const bytes = new Uint8Array(readFileSync(oracle.objPath));
    const elf = parseElf(bytes, { machine: 183 });
    // Rename .plt in a copy: "module PLT section(s) missing".
    const copy = bytes.slice();
    const plt = elf.sections.find((s) => s.name === '.plt')!;
    const strtab = elf.sections[new DataView(copy.buffer).getUint16(62, true)];
    const nameAt =
      strtab.offset +
      new DataView(copy.buffer).getUint32(
        Number(new DataView(copy.buffer).getBigUint64(40, true)) + plt.index * 64,
        true,
      );
    copy[nameAt + 1] = 'q'.charCodeAt(0);
    const { allocator, loader } = load(SYMS, NEAR_VA);
    assert.throws(() => loader.load(copy, 'relocs-arm64'), /module PLT section\(s\) missing/);
    assert.equal(allocator.live.size, 0);
  });
});
