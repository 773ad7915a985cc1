/**
 * Every module of a real Debian arm64 package (linux-image-cloud-arm64), loaded for real.
 *
 * Needs the arm64 dataset (`scripts/fetch-dataset.sh --arch arm64 --flavour cloud`); without it
 * the suite is skipped with that reason, unless EXECMEM_REQUIRE_DATASET=1 (CI), where a missing
 * dataset fails. What is checked:
 * - through every design on the simulated arm64 machine: every module loads, 0 unresolved
 *   symbols (modversions CRCs included: the exports come from the Image's __ksymtab and
 *   __kcrctab, arm64-image.ts), 0 relocation overflows, 0 W^X violations;
 * - per module, the relocations applied per type equal what readelf lists in the file;
 * - placed where Debian 6.1's RANDOMIZE_MODULE_REGION_FULL may put modules (1 GiB below the
 *   kernel, out of CALL26 reach), every module still loads, now through PLT entries, never more
 *   than module_frob_arch_sections() reserved;
 * - placed beyond ADRP reach (8 GiB away), a module fails naming module, section, offset and
 *   relocation, and the allocator holds exactly what it held before.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { toSigned } from '../src/consumers/modules/image.js';
import { ModuleLoadError, ModuleLoader } from '../src/consumers/modules/loader.js';
import { createMachine } from '../src/machine/machine.js';
import { POLICY_NAMES, policyByName } from '../src/policies/index.js';
import {
  datasetKernelSymbols,
  dependencyOrder,
  findCachedDataset,
  openDataset,
  readModuleFile,
} from '../src/workloads/dataset/dataset.js';
import { datasetArch } from '../src/workloads/dataset/flavour.js';
import { loadDatasetModules } from '../src/workloads/dataset/load.js';
import { execmem } from './cli-helpers.js';
import { PlainAllocator } from './helpers/ld-oracle.js';
import { hasTool } from './helpers/toolchain.js';

const root = findCachedDataset(undefined, 'cloud-arm64');
const required = process.env.EXECMEM_REQUIRE_DATASET === '1';

/** readelf -rW over many files: per file, relocation type -> count. */
function readelfCounts(files: readonly string[]): Map<string, Record<string, number>> {
  const out = new Map<string, Record<string, number>>();
  for (let i = 0; i < files.length; i += 200) {
    const batch = files.slice(i, i + 200);
    const r = spawnSync('readelf', ['-rW', ...batch], { encoding: 'utf8', maxBuffer: 1 << 30 });
    assert.equal(r.status, 0, r.stderr);
    let current = batch.length === 1 ? batch[0] : '';
    for (const line of r.stdout.split('\n')) {
      if (line.startsWith('File: ')) current = line.slice(6).trim();
      const m = /^[0-9a-f]{16}\s+[0-9a-f]{16}\s+(R_AARCH64_\w+)/.exec(line);
      if (!m) continue;
      const c = out.get(current) ?? {};
      c[m[1]] = (c[m[1]] ?? 0) + 1;
      out.set(current, c);
    }
  }
  return out;
}

describe('the Debian arm64 package (linux-image-cloud-arm64)', {
  skip:
    root || required
      ? false
      : 'arm64 dataset not in the cache (run: scripts/fetch-dataset.sh --arch arm64 --flavour cloud)',
}, () => {
  it('loads every module through every design: 0 unresolved, 0 overflows, 0 W^X violations', () => {
    assert.ok(root, 'EXECMEM_REQUIRE_DATASET=1 but the arm64 dataset is not in the cache');
    const index = openDataset(root);
    assert.equal(datasetArch(index), 'arm64');
    for (const policy of POLICY_NAMES) {
      const machine = createMachine({ arch: 'arm64', seed: 1 });
      const allocator = policyByName(policy).create(machine, 1);
      const image = machine.arch.layout.kernelImage;
      const offset = machine.kernelTextStart - image.textStart;
      const kernel = datasetKernelSymbols(index).withKaslrOffset(offset);
      const percpuBaseAddr = toSigned(
        machine.kernelTextStart + image.textBytes + image.rodataBytes + image.dataBytes,
      );
      const { report } = loadDatasetModules(index, kernel, allocator, { arch: 'arm64', percpuBaseAddr });
      assert.deepEqual(report.failed, [], policy);
      assert.equal(report.loaded, index.modules.length, policy);
      assert.equal(report.unresolvedSymbols, 0, policy);
      assert.equal(report.relocOverflows, 0, policy);
      assert.equal(machine.wxViolationCount(), 0, policy);
      assert.ok((report.relocsByType.R_AARCH64_CALL26 ?? 0) > 100_000, policy);
    }
  });

  it('the CLI: modules load --arch arm64 --policy all --json gives every design its relocations per type and PLT entries', () => {
    const r = execmem(['--json', 'modules', 'load', 'af_key', '--arch', 'arm64', '--policy', 'all'], 300_000);
    assert.equal(r.status, 0, r.stderr);
    const reports = JSON.parse(r.stdout) as {
      allocator: string;
      arch: string;
      loaded: number;
      pltEntries: number;
      relocsByType: Record<string, number>;
    }[];
    assert.deepEqual(
      reports.map((x) => x.allocator),
      [...POLICY_NAMES],
    );
    for (const x of reports) {
      assert.equal(x.arch, 'arm64');
      assert.ok(x.loaded >= 1, x.allocator);
      assert.equal(x.pltEntries, 0, `${x.allocator}: in the direct window, no PLT entry`);
      assert.ok((x.relocsByType.R_AARCH64_CALL26 ?? 0) > 0, x.allocator);
      assert.ok((x.relocsByType.R_AARCH64_ADR_PREL_PG_HI21 ?? 0) > 0, x.allocator);
    }
  });

  it('applies, per module, exactly the relocations readelf lists', {
    skip: hasTool('readelf') ? false : 'readelf not installed',
  }, () => {
    assert.ok(root);
    const index = openDataset(root);
    const kernel = datasetKernelSymbols(index);
    const allocator = new PlainAllocator(0x800080000000 - 64 * 1024 * 1024, { keepBytes: false });
    const loader = new ModuleLoader({
      allocator,
      kernel,
      arch: 'arm64',
      percpuBaseAddr: toSigned(0x800082800000),
    });
    const byName = new Map(index.modules.map((m) => [m.name, m]));
    const files = index.modules.map((m) => join(root, m.path));
    const want = readelfCounts(files);
    let compared = 0;
    for (const name of dependencyOrder(index)) {
      const m = byName.get(name)!;
      const mod = loader.load(readModuleFile(join(root, m.path)), name);
      assert.deepEqual(mod.relocCounts, want.get(join(root, m.path)) ?? {}, name);
      compared++;
    }
    assert.equal(compared, index.modules.length);
  });

  it('out of CALL26 reach (1 GiB below the kernel) every module loads through PLT entries', () => {
    assert.ok(root);
    const index = openDataset(root);
    const kernel = datasetKernelSymbols(index);
    const allocator = new PlainAllocator(0x800080000000 - 1024 * 1024 * 1024, { keepBytes: false });
    const { report, loader } = loadDatasetModules(index, kernel, allocator, {
      arch: 'arm64',
      percpuBaseAddr: toSigned(0x800082800000),
    });
    assert.deepEqual(report.failed, []);
    assert.equal(report.relocOverflows, 0);
    // Nearly every module calls into the kernel, so nearly every one needs entries now.
    const withPlts = loader.list().filter((m) => m.pltEntries > 0).length;
    assert.ok(withPlts > 0.9 * index.modules.length, `${withPlts} modules with PLT entries`);
    assert.ok(report.pltEntries > index.modules.length, `${report.pltEntries} PLT entries`);
  });

  it('beyond ADRP reach a module fails naming module, section, offset and relocation; the allocator is as before', () => {
    assert.ok(root);
    const index = openDataset(root);
    const kernel = datasetKernelSymbols(index);
    const allocator = new PlainAllocator(0x800080000000 - 8 * 1024 * 1024 * 1024, { keepBytes: false });
    const loader = new ModuleLoader({ allocator, kernel, arch: 'arm64' });
    // The first module without depends= that reaches kernel data through an ADRP fails.
    let failed: ModuleLoadError | null = null;
    for (const m of index.modules.filter((x) => x.depends.length === 0)) {
      const before = [...allocator.live.entries()];
      try {
        loader.load(readModuleFile(join(root, m.path)), m.name);
      } catch (e) {
        assert.ok(e instanceof ModuleLoadError, String(e));
        assert.deepEqual([...allocator.live.entries()], before, `${m.name}: allocator as before`);
        assert.equal(loader.get(m.name), undefined);
        failed = e;
        break;
      }
    }
    assert.ok(failed, 'some module fails 8 GiB away');
    assert.equal(failed.code, 'ENOEXEC');
    assert.equal(failed.relocKind, 'overflow');
    assert.match(
      failed.message,
      /module \S+: overflow in relocation type \d+ val [0-9a-f]+ at \S+\+0x[0-9a-f]+ \(\.rela\S+\[\d+\], R_AARCH64_\w+\)/,
    );
  });
});
