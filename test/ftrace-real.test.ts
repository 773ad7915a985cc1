/**
 * The `ftrace-real` workload: its shipped data (data/ftrace-sites.json) is consistent and, when
 * the dataset is in the cache, equal to what the .ko files say; its trace patches exactly the
 * sites its summary counts (three writes each, batched by TP_VEC_MAX); and it runs in `compare`
 * for every design with no failure and 0 W^X where the design's kernel leaves no W+X pages.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { readMcountSites } from '../src/consumers/ftrace/index.js';
import { bpfFentryTrampolineBytes, trampolineBytes } from '../src/consumers/ftrace/x86.js';
import { parseElf, stripModuleSignature } from '../src/consumers/modules/elf.js';
import { layoutModule } from '../src/consumers/modules/layout.js';
import { runCompare } from '../src/metrics/compare.js';
import { POLICIES } from '../src/policies/index.js';
import { findCachedDataset, openDataset, readModuleFile } from '../src/workloads/dataset/dataset.js';
import { ftraceReal, ftraceRealSummary, ftraceSitesData } from '../src/workloads/ftrace-real.js';
import { WORKLOADS } from '../src/workloads/registry.js';
import { summarizeTrace } from '../src/workloads/trace.js';

const SCALE = 0.05;

describe('data/ftrace-sites.json', () => {
  const d = ftraceSitesData();
  it('adds up, and its traced offsets are real sites inside each module text', () => {
    assert.equal(d.modules.length, d.totals.modules);
    assert.equal(
      d.modules.reduce((n, m) => n + m.sites, 0),
      d.totals.sites,
    );
    assert.equal(
      d.modules.reduce((n, m) => n + m.initSites, 0),
      d.totals.initSites,
    );
    const byName = new Map(d.modules.map((m) => [m.name, m]));
    for (const [name, deltas] of Object.entries(d.traced)) {
      const row = byName.get(name)!;
      assert.ok(row.dir === d.subsystem || row.dir.startsWith(`${d.subsystem}/`), name);
      assert.equal(deltas.length, row.sites, `${name}: every core-text site`);
      let at = 0;
      deltas.forEach((delta, i) => {
        assert.ok(i === 0 ? delta >= 0 : delta >= 5, `${name}: sites 5 bytes apart at least`);
        at += delta;
      });
      assert.ok(at + 5 <= row.textBytes, `${name}: last site inside the text`);
    }
    for (const h of d.hot) assert.ok(h.offsetBytes + 5 <= byName.get(h.module)!.textBytes, h.function);
  });

  const root = findCachedDataset();
  const index = root === null ? null : openDataset(root);
  const skip =
    index === null
      ? 'the Debian dataset is not in the cache'
      : index.packageName !== d.packageName
        ? `the cache holds ${index.packageName}, the data ${d.packageName}`
        : false;
  it('equals what the .ko files of the package say (re-read with readMcountSites)', { skip }, () => {
    const byName = new Map(index!.modules.map((m) => [m.name, m]));
    for (const name of ['nf_conntrack', 'nf_tables', 'xfs', 'virtio_net', '8021q']) {
      const elf = parseElf(
        stripModuleSignature(readModuleFile(join(index!.root, byName.get(name)!.path))).bytes,
      );
      const sites = readMcountSites(elf, layoutModule(elf, name));
      const row = d.modules.find((m) => m.name === name)!;
      assert.equal(sites.filter((s) => s.memType === 'text').length, row.sites, name);
      assert.equal(sites.filter((s) => s.memType === 'init_text').length, row.initSites, name);
      const deltas = d.traced[name];
      if (deltas) {
        let at = 0;
        const offs = deltas.map((x) => (at += x));
        assert.deepEqual(
          offs,
          sites.filter((s) => s.memType === 'text').map((s) => s.offsetBytes),
        );
      }
    }
  });
});

describe('the ftrace-real trace', () => {
  it('patches what its summary counts: three writes per site update, three syncs per batch', () => {
    const trace = ftraceReal({ scale: SCALE });
    const s = ftraceRealSummary({ scale: SCALE });
    const sum = summarizeTrace(trace);
    assert.equal(sum.allocCountByType.ftrace, s.ftraceTrampolines);
    assert.equal(sum.allocBytesByType.ftrace, s.ftraceTrampolines * trampolineBytes(false));
    assert.equal(s.bpfTrampolines % s.bpfTrampolineBytes.length, 0);
    let patchWrites = 0;
    let bpfTramp = 0;
    for (const ev of trace.events) {
      if (ev.op === 'write' && ev.fill === 'data' && (ev.sizeBytes === 1 || ev.sizeBytes === 4))
        patchWrites++;
      if (ev.op === 'alloc' && ev.caller === 'bpf_trampoline') {
        bpfTramp++;
        assert.ok(s.bpfTrampolineBytes.includes(ev.sizeBytes));
      }
    }
    assert.equal(patchWrites, s.pokes);
    assert.equal(s.pokes, 3 * s.sitePatches);
    assert.equal(s.syncs, 3 * s.batches);
    assert.equal(bpfTramp, s.bpfTrampolines);
    assert.deepEqual(
      s.bpfTrampolineBytes,
      ftraceSitesData().hot.map((h) => bpfFentryTrampolineBytes(h.nrArgs)),
    );
    assert.equal(s.sitesDropped, 0);
    // Per cycle the graph tracer patches every site on and off; BPF sessions one site per attach/detach.
    const cycles = s.ftraceTrampolines;
    assert.equal(s.sitePatches, cycles * (2 * s.graphSites + (2 * s.bpfTrampolines) / cycles));
  });

  it('at scale 1 covers the whole subsystem, and says so in the registry', () => {
    const s = ftraceRealSummary();
    const d = ftraceSitesData();
    assert.equal(
      s.graphSites,
      Object.values(d.traced).reduce((n, v) => n + v.length, 0),
    );
    assert.ok(s.graphSites > 2000);
    assert.match(WORKLOADS['ftrace-real'].describe, new RegExp(`${s.sitePatches} site patches`));
    assert.match(WORKLOADS['ftrace-real'].describe, new RegExp(`${s.syncs} sync_core`));
  });
});

describe('ftrace-real in compare', () => {
  for (const arch of ['x86_64', 'arm64'] as const) {
    it(`${arch}: every design runs it with no failure, and W^X 0 where its kernel leaves no W+X page`, () => {
      const s = ftraceRealSummary({ scale: SCALE });
      const r = runCompare({ workload: 'ftrace-real', scale: SCALE, arch, fetch: { callsScale: 0.01 } });
      assert.equal(r.policies.length, Object.keys(POLICIES).length);
      for (const p of r.policies) {
        assert.equal(p.metrics.failures, 0, `${p.name}: ${p.failureSamples[0]?.reason}`);
        if (p.wxHoles === null) assert.equal(p.metrics.wxViolationsTotal, 0, p.name);
        // Every pass of every site update is an alias write into finalized text.
        if (arch === 'x86_64') assert.ok(p.metrics.pokes >= s.pokes, p.name);
      }
      if (arch === 'x86_64') {
        const old = r.policies.find((p) => p.name === 'module_alloc')!;
        assert.ok(old.metrics.wxViolations > 0, "5.17's W+X BPF trampoline pages (bpf_jit_alloc_exec_page)");
      }
    });
  }
});
