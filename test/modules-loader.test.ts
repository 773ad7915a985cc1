/**
 * The module loader's lifecycle and linking rules, on gcc-built fixture modules, through an
 * in-test allocator that checks the call protocol and through every real policy on the
 * simulated machine; plus the whole Debian package when it is in the cache.
 *
 * The full-package test is the one dataset test that may be *required*: with
 * EXECMEM_REQUIRE_DATASET=1 (set by CI after scripts/fetch-dataset.sh) a missing dataset fails
 * instead of skipping.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ExecmemType } from '../src/arch/types.js';
import { parseElf, SHT_RELA } from '../src/consumers/modules/elf.js';
import { layoutModule } from '../src/consumers/modules/layout.js';
import {
  MEM_TYPE_EXECMEM,
  ModuleLoadError,
  ModuleLoader,
  toSigned,
} from '../src/consumers/modules/loader.js';
import { PercpuArea } from '../src/consumers/modules/percpu.js';
import { KernelSymbols } from '../src/consumers/modules/symbols.js';
import { createMachine } from '../src/machine/machine.js';
import { POLICY_NAMES, policyByName } from '../src/policies/index.js';
import type { ExecAllocator } from '../src/policies/types.js';
import {
  datasetKernelSymbols,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';
import { loadDatasetModules } from '../src/workloads/dataset/load.js';
import { compileFixture, FAKE_SYSTEM_MAP, hasTool } from './helpers/toolchain.js';

const hasGcc = hasTool('gcc');

/** Checks the ExecAllocator protocol the loader must follow, and keeps the bytes. */
class ProtocolAllocator implements ExecAllocator {
  readonly name = 'test-protocol';
  readonly live = new Map<
    number,
    { type: ExecmemType; bytes: Uint8Array; final: boolean; sealed: boolean }
  >();
  readonly sealed: number[] = [];
  private next: number;
  constructor(startVa = 0xffffc0001000) {
    this.next = startVa;
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes = 1): number {
    assert.ok(
      alignBytes >= 1 && alignBytes <= 4096 && (alignBytes & (alignBytes - 1)) === 0,
      `align ${alignBytes}`,
    );
    const va = this.next;
    this.next += Math.ceil(sizeBytes / 4096) * 4096 + 4096;
    this.live.set(va, { type, bytes: new Uint8Array(sizeBytes), final: false, sealed: false });
    return va;
  }
  write(va: number, bytes: Uint8Array): void {
    const a = this.live.get(va);
    assert.ok(a, 'write to a live allocation');
    assert.ok(!a.final, 'no write after finalize');
    assert.equal(bytes.length, a.bytes.length, 'the whole image at once');
    a.bytes.set(bytes);
  }
  finalize(va: number): void {
    const a = this.live.get(va)!;
    assert.ok(!a.final, 'finalize once');
    a.final = true;
  }
  seal(va: number): void {
    const a = this.live.get(va)!;
    assert.equal(a.type, 'module_ro_after_init', 'only ro_after_init is sealed');
    assert.ok(a.final && !a.sealed);
    a.sealed = true;
    this.sealed.push(va);
  }
  free(va: number): void {
    assert.ok(this.live.delete(va), 'free of a live allocation');
  }
  shrink(): void {}
  usage() {
    let liveBytes = 0;
    for (const a of this.live.values()) liveBytes += a.bytes.length;
    return { liveBytes, mappedBytes: liveBytes };
  }
}

let dir = '';
const obj: Record<string, Uint8Array> = {};

function compile(name: string, src: string, defines: string[] = []): Uint8Array {
  const out = join(dir, `${name}.o`);
  compileFixture(src, out, defines);
  return new Uint8Array(readFileSync(out));
}

function newLoader(allocator: ExecAllocator = new ProtocolAllocator()) {
  return new ModuleLoader({ allocator, kernel: KernelSymbols.fromSystemMap(FAKE_SYSTEM_MAP) });
}

describe('module loader on fixture modules', { skip: hasGcc ? false : 'gcc not installed' }, () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'execmem-mod-'));
    obj.relocs = compile('relocs', 'relocs.c');
    obj.exporter = compile('exporter', 'exporter.c');
    obj.exporter2 = compile('exporter2', 'exporter.c', ['-DMODNAME="exporter2"']);
    obj.user = compile('user', 'user.c');
    obj.userGplProprietary = compile('user_gpl', 'user.c', ['-DUSE_GPL', '-DLICENSE="Proprietary"']);
    obj.userGpl = compile('user_gpl_ok', 'user.c', ['-DUSE_GPL']);
    obj.userNs = compile('user_ns', 'user.c', ['-DUSE_NS']);
    obj.userNsImport = compile('user_ns_import', 'user.c', ['-DUSE_NS', '-DIMPORT_NS']);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('load allocates one region per memory type, init frees init memory and seals ro_after_init, unload frees all', () => {
    const allocator = new ProtocolAllocator();
    const loader = newLoader(allocator);
    const mod = loader.load(obj.relocs, 'relocs');
    assert.equal(mod.name, 'oracle_fixture');
    assert.equal(mod.state, 'coming');
    for (const t of ['text', 'rodata', 'ro_after_init', 'data', 'init_text'] as const) {
      const m = mod.mems[t];
      assert.ok(m, `${t} allocated`);
      assert.equal(allocator.live.get(m.va)!.type, MEM_TYPE_EXECMEM[t]);
      assert.ok(allocator.live.get(m.va)!.final, `${t} finalized`);
    }
    assert.equal(allocator.live.size, Object.keys(mod.mems).length);
    const names = mod.functions.map((f) => f.name);
    assert.ok(names.includes('fixture_entry') && names.includes('fixture_init'));
    assert.ok(mod.functions.find((f) => f.name === 'fixture_init')!.init);
    for (const f of mod.functions) {
      const m = f.init ? mod.mems.init_text! : mod.mems.text!;
      assert.ok(f.va >= m.va && f.va + f.sizeBytes <= m.va + m.sizeBytes, `${f.name} inside its memory`);
    }
    // .gnu.linkonce.this_module (align 64) in data at a 64-byte aligned offset, alloc asked for 64
    assert.equal(mod.mems.data!.va % 64, 0);

    const before = allocator.live.size;
    const initRegions = Object.keys(mod.mems).filter((t) => t.startsWith('init_')).length;
    assert.ok(mod.mems.init_data, 'init_data holds the kallsyms copy (layout_symtab)');
    loader.init(mod.name);
    assert.equal(mod.state, 'live');
    assert.equal(mod.mems.init_text, undefined);
    assert.equal(allocator.live.size, before - initRegions);
    assert.equal(mod.mems.init_data, undefined);
    assert.deepEqual(allocator.sealed, [mod.mems.ro_after_init!.va]);
    assert.ok(mod.functions.every((f) => !f.init));
    assert.throws(
      () => loader.init(mod.name),
      (e: unknown) => e instanceof ModuleLoadError && e.code === 'EINVAL',
    );

    assert.throws(
      () => loader.load(obj.relocs, 'again'),
      (e: unknown) => e instanceof ModuleLoadError && e.code === 'EEXIST',
    );
    loader.unload(mod.name);
    assert.equal(allocator.live.size, 0);
    assert.throws(
      () => loader.unload(mod.name),
      (e: unknown) => e instanceof ModuleLoadError && e.code === 'ENOENT',
    );
    const s = loader.stats();
    assert.equal(s.modulesLoaded, 1);
    assert.equal(s.modulesFailed, 1);
    assert.equal(s.modulesUnloaded, 1);
  });

  it('links against another module: unresolved before, resolved after, values are the exporter’s addresses', () => {
    const allocator = new ProtocolAllocator();
    const loader = newLoader(allocator);
    assert.throws(
      () => loader.load(obj.user, 'user'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'ENOENT' &&
        e.unresolved.includes('shared_func') &&
        e.unresolved.includes('shared_value') &&
        /Unknown symbol shared_/.test(e.message),
    );
    assert.equal(allocator.live.size, 0);
    const exp = loader.load(obj.exporter, 'exporter');
    assert.equal(exp.exports.get('gpl_func')?.gplOnly, true);
    assert.equal(exp.exports.get('ns_func')?.namespace, 'FIXTURE_NS');
    const sharedFunc = exp.functions.find((f) => f.name === 'shared_func')!;
    assert.equal(exp.exports.get('shared_func')!.value, toSigned(sharedFunc.va));

    const user = loader.load(obj.user, 'user');
    assert.deepEqual([...user.uses], ['exporter']);
    assert.deepEqual(user.depends, ['exporter']);
    // Check every PC32/PLT32 to an exporter symbol: P + disp32 - A is the export's address.
    const elf = parseElf(obj.user);
    const rela = elf.sections.find((s) => s.type === SHT_RELA && s.name === '.rela.text')!;
    const text = allocator.live.get(user.mems.text!.va)!.bytes;
    const textOffset = 0; // .text is the first (and only) text section
    let checked = 0;
    for (let off = rela.offset; off < rela.offset + rela.sizeBytes; off += 24) {
      const rOff = Number(elf.view.getBigUint64(off, true));
      const sym = elf.symbols[elf.view.getUint32(off + 12, true)];
      const addend = Number(elf.view.getBigInt64(off + 16, true));
      const e = exp.exports.get(sym.name);
      if (!e) continue;
      const disp = new DataView(text.buffer).getInt32(textOffset + rOff, true);
      assert.equal(toSigned(user.mems.text!.va) + rOff + disp - addend, e.value, sym.name);
      checked++;
    }
    assert.ok(checked >= 2, `checked ${checked}`);
    assert.throws(
      () => loader.unload('exporter'),
      (e: unknown) => e instanceof ModuleLoadError && e.code === 'EBUSY' && /in use by: user/.test(e.message),
    );
    assert.throws(
      () => loader.load(obj.exporter2, 'exporter2'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        /exports duplicate symbol shared_func \(owned by exporter\)/.test(e.message),
    );
    loader.unload('user');
    loader.unload('exporter');
    assert.equal(allocator.live.size, 0);
  });

  it('GPL-only exports need a GPL-compatible license; namespaced exports need import_ns', () => {
    const loader = newLoader();
    loader.load(obj.exporter, 'exporter');
    assert.throws(
      () => loader.load(obj.userGplProprietary, 'user'),
      (e: unknown) =>
        e instanceof ModuleLoadError && e.code === 'ENOENT' && e.unresolved.join() === 'gpl_func',
    );
    loader.unload(loader.load(obj.userGpl, 'user').name);
    assert.throws(
      () => loader.load(obj.userNs, 'user'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'EINVAL' &&
        /uses symbol \(ns_func\) from namespace FIXTURE_NS, but does not import it/.test(e.message),
    );
    loader.load(obj.userNsImport, 'user');
  });

  it('layout follows layout_sections(): memory type by flags and .init names, index order, alignment', () => {
    const elf = parseElf(obj.relocs);
    const layout = layoutModule(elf, 'oracle_fixture');
    const where = (name: string) => layout.placement[elf.sections.find((s) => s.name === name)!.index];
    assert.equal(where('.text')?.memType, 'text');
    assert.equal(where('.init.text')?.memType, 'init_text');
    assert.equal(where('.data..ro_after_init')?.memType, 'ro_after_init');
    for (const n of ['.rodata', '.rodata.relocs', '.modinfo']) assert.equal(where(n)?.memType, 'rodata', n);
    for (const n of ['.data', '.data.forced', '.gnu.linkonce.this_module'])
      assert.equal(where(n)?.memType, 'data', n);
    assert.equal(where('.comment'), null);
    assert.equal(where('.symtab'), null);
    for (const t of ['rodata', 'data'] as const) {
      const placed = elf.sections.filter((s) => layout.placement[s.index]?.memType === t);
      for (let i = 1; i < placed.length; i++) {
        assert.ok(
          layout.placement[placed[i].index]!.offset >=
            layout.placement[placed[i - 1].index]!.offset + placed[i - 1].sizeBytes,
          `${t}: index order, no overlap`,
        );
      }
    }
    for (const s of elf.sections) {
      const p = layout.placement[s.index];
      if (!p) continue;
      assert.equal(p.offset % (s.alignBytes || 1), 0, `${s.name} aligned`);
      assert.ok(p.offset + s.sizeBytes <= layout.sizeBytes[p.memType]);
      assert.ok(layout.alignBytes[p.memType] >= (s.alignBytes || 1));
    }
    assert.ok(layout.kallsymsCoreBytes > 0 && layout.kallsymsInitBytes > 0);
  });

  it('refuses a writable+executable section (module_enforce_rwx_sections)', () => {
    const allocator = new ProtocolAllocator();
    assert.throws(
      () => newLoader(allocator).load(compile('wx', 'wx.c'), 'wx'),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        /Module wx: section \.text\.wx is both writable and executable/.test(e.message),
    );
    assert.equal(allocator.live.size, 0);
  });

  for (const policy of POLICY_NAMES) {
    it(`through policy ${policy} on the simulated machine: bytes land, W^X holds, everything is freed`, () => {
      const machine = createMachine({ arch: 'x86_64', seed: 3 });
      const real = policyByName(policy).create(machine, 3);
      const written = new Map<number, Uint8Array>();
      const recording: ExecAllocator = {
        name: real.name,
        alloc: (t, s, a) => real.alloc(t, s, a),
        write: (va, b) => {
          written.set(va, b.slice());
          real.write(va, b);
        },
        finalize: (va) => real.finalize(va),
        seal: (va) => real.seal(va),
        free: (va) => real.free(va),
        shrink: () => real.shrink(),
        usage: () => real.usage(),
      };
      const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
      const loader = new ModuleLoader({
        allocator: recording,
        kernel: KernelSymbols.fromSystemMap(FAKE_SYSTEM_MAP).withKaslrOffset(offset),
      });
      for (const o of [obj.relocs, obj.exporter, obj.user]) loader.init(loader.load(o).name);
      assert.equal(machine.wxViolationCount(), 0);
      for (const mod of loader.list()) {
        for (const m of Object.values(mod.mems)) {
          const got = machine.load(0, m.va, m.sizeBytes);
          assert.deepEqual(
            Buffer.from(got).toString('hex'),
            Buffer.from(written.get(m.va)!).toString('hex'),
            `${mod.name} ${m.memType}`,
          );
        }
      }
      for (const n of ['user', 'exporter', 'oracle_fixture']) loader.unload(n);
      assert.equal(real.usage().liveBytes, 0);
      assert.equal(machine.wxViolationCount(), 0);
    });
  }
});

const root = findCachedDataset();
const required = process.env.EXECMEM_REQUIRE_DATASET === '1';
describe('the whole Debian package', {
  skip: root || required ? false : 'Debian dataset not in the cache (run: execmem dataset fetch)',
}, () => {
  it('every module loads through execmem with zero unresolved symbols and zero overflows; counts match readelf', () => {
    assert.ok(root, 'EXECMEM_REQUIRE_DATASET=1 but no dataset in the cache: run scripts/fetch-dataset.sh');
    const index = openDataset(root);
    const machine = createMachine({ arch: 'x86_64', seed: 1 });
    const allocator = policyByName('execmem').create(machine, 1);
    const offset = machine.kernelTextStart - machine.arch.layout.kernelImage.textStart;
    const kernel = datasetKernelSymbols(index).withKaslrOffset(offset);
    const { loader, report } = loadDatasetModules(index, kernel, allocator);
    assert.deepEqual(report.failed, []);
    assert.equal(report.loaded, index.modules.length);
    assert.equal(report.unresolvedSymbols, 0);
    assert.equal(report.relocOverflows, 0);
    assert.equal(machine.wxViolationCount(), 0);
    // modversions are really compared: a kernel whose _printk CRC differs is refused, as Linux does.
    const exports = [...kernel.exports()].map((e) =>
      e.name === '_printk' ? { ...e, crc: (e.crc ?? 0) ^ 1 } : e,
    );
    const skewed = new KernelSymbols(exports, kernel.perCpuEndBytes, 'skewed', kernel.kaslrOffsetBytes);
    const lone =
      index.modules.find((m) => m.depends.length === 0 && m.name === 'xor') ??
      index.modules.find((m) => m.depends.length === 0)!;
    assert.throws(
      () =>
        new ModuleLoader({ allocator: new ProtocolAllocator(), kernel: skewed }).load(
          readModuleFile(join(index.root, lone.path)),
          lone.name,
        ),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.code === 'EINVAL' &&
        /disagrees about version of symbol _printk/.test(e.message),
    );
    // Placed in the vmalloc area (not the module range), a real module is out of rel32 reach.
    const far = new ProtocolAllocator(0xc90000000000);
    assert.throws(
      () =>
        new ModuleLoader({ allocator: far, kernel }).load(
          readModuleFile(join(index.root, lone.path)),
          lone.name,
        ),
      (e: unknown) =>
        e instanceof ModuleLoadError &&
        e.relocKind === 'overflow' &&
        /overflow in relocation type (2|4|11) val/.test(e.message),
    );
    assert.equal(far.live.size, 0);
    // Independent count: readelf -r on a sample of modules (relocations into allocated sections).
    if (hasTool('readelf')) {
      const sample = index.modules.filter((_, i) => i % 97 === 0);
      for (const m of sample) {
        const out = execFileSync('readelf', ['-rW', join(index.root, m.path)], {
          encoding: 'utf8',
          maxBuffer: 64 << 20,
        });
        const counts: Record<string, number> = {};
        let section = '';
        for (const line of out.split('\n')) {
          const head = /^Relocation section '([^']+)'/.exec(line);
          if (head) section = head[1];
          const t = /\s(R_X86_64_\w+)\s/.exec(line);
          // The per-CPU section's relocations are skipped by Linux (not SHF_ALLOC at that point).
          if (t && section !== '.rela.data..percpu') counts[t[1]] = (counts[t[1]] ?? 0) + 1;
        }
        const mod = loader.get(m.name)!;
        for (const [t, n] of Object.entries(counts)) {
          if (/\.rela\.(BTF|debug|comment)/.test(t)) continue;
          assert.equal(mod.relocCounts[t] ?? 0, n, `${m.name} ${t}`);
        }
      }
    }
  });
});

describe('per-CPU reserve (percpu_modalloc)', () => {
  it('first fit with alignment, clamp above a page, exhaustion message, reuse after free', () => {
    const area = new PercpuArea(0x34000, 8192);
    const a = area.alloc('a', 10, 8);
    assert.equal(a.offset, 0x34000);
    const b = area.alloc('b', 100, 64);
    assert.equal(b.offset, 0x34040);
    const c = area.alloc('c', 16, 8192);
    assert.match(c.warning ?? '', /c: per-cpu alignment 8192 > 4096/);
    assert.equal(c.offset % 4096, 0);
    assert.throws(() => area.alloc('big', 8000, 8), /big: Could not allocate 8000 bytes percpu data/);
    area.free(b.offset);
    assert.equal(area.alloc('d', 64, 64).offset, 0x34040);
    assert.equal(area.usage().slices, 3);
  });
});
