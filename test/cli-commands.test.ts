/**
 * The data commands of the `execmem` binary, spawned as a user runs them: --json documents parse
 * and carry their documented keys; ptdump shows the module area; report writes an HTML page whose
 * charts are SVG with data, and summary.md; host runs real JIT code and checks it.
 *
 * Commands whose subsystem has not landed yet exit 1 saying "not available yet"; those tests
 * skip with that message (and only then), so the suite tells which parts are still missing.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { assertUsageError, execmemAsync, type Run } from './cli-helpers.js';

/**
 * Every subsystem has landed, so a command that reports one as "not available yet" is a
 * regression (a missing build output), not a reason to skip: fail with its message.
 */
function assertAvailable(r: Run): void {
  assert.doesNotMatch(r.stderr, /not available yet/, r.stderr);
}

function parseJson(r: Run): Record<string, unknown> {
  assert.equal(r.status, 0, `exit 0 expected; stderr: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

function assertKeys(obj: Record<string, unknown>, keys: readonly string[]): void {
  for (const k of keys)
    assert.ok(Object.hasOwn(obj, k), `missing key '${k}' in ${Object.keys(obj).join(',')}`);
}

test('ptdump shows the module area after a workload', async (_t) => {
  const r = await execmemAsync(['ptdump', '--workload', 'bpf-churn', '--scale', '0.05']);
  assertAvailable(r);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(
    lines[0],
    /^# simulated x86_64 machine \(seed 1\), module area 0xffffffff[0-9a-f]{8}-0xffffffffff000000/,
  );
  // Mappings listed inside the module area (x86-64 KASLR: 0xffffffffc0000000 and up).
  const mapped = lines.filter((l) => /^0xffffffff[c-f][0-9a-f]{7}-0xffffffff[c-f][0-9a-f]{7}/.test(l));
  assert.ok(mapped.length > 0, `no module-area lines in:\n${r.stdout.slice(0, 2000)}`);
});

test('ptdump without a workload: nothing mapped yet, said so, and the markers of the area', async () => {
  const [x86, arm, json] = await Promise.all([
    execmemAsync(['ptdump']),
    execmemAsync(['ptdump', '--arch', 'arm64']),
    execmemAsync(['ptdump', '--json']),
  ]);
  assert.equal(x86.status, 0, x86.stderr);
  assert.deepEqual(x86.stdout.split('\n').slice(1), [
    '# nothing is mapped in the module area yet: no workload ran (try --workload bpf-churn)',
    '---[ Modules ]---',
    '---[ End Modules ]---',
    '',
  ]);
  // arm64 names the area as arch/arm64/mm/ptdump.c does (PAGE_END and MODULES_VADDR coincide).
  assert.match(arm.stdout, /\("Modules start" to "Modules end"\)/);
  assert.match(arm.stdout, /---\[ Modules start \]---\n---\[ Modules end \]---/);
  const doc = parseJson(json);
  assert.equal(doc.mapped, false);
  assert.deepEqual(doc.lines, ['---[ Modules ]---', '---[ End Modules ]---']);
});

test("ptdump prints Linux's large-page column: PSE on x86 (2 MiB leaves), BLK on arm64", async () => {
  const [ours, linux, arm] = await Promise.all([
    execmemAsync(['ptdump', '--workload', 'bpf-churn', '--scale', '0.05']),
    execmemAsync(['ptdump', '--workload', 'bpf-churn', '--scale', '0.05', '--policy', 'module_alloc']),
    // arm64 BPF lives in vmalloc space; modules fill the module area.
    execmemAsync(['ptdump', '--workload', 'modules-synthetic', '--scale', '0.05', '--arch', 'arm64']),
  ]);
  // arch/x86/mm/dump_pagetables.c printk_prot(): USR RW PWT PCD PSE PAT GLB NX level.
  assert.match(ours.stdout, /\n0x[0-9a-f]{16}-0x[0-9a-f]{16} {11}2M {5}ro {9}PSE {5}GLB x {2}pmd\n/);
  assert.match(linux.stdout, /\n0x[0-9a-f]{16}-0x[0-9a-f]{16} +\d+K {5}ro {17}GLB x {2}pte\n/);
  assert.doesNotMatch(linux.stdout, /PSE/, 'module_alloc maps BPF code with 4K pages');
  // arch/arm64/mm/ptdump.c: level, then pte_bits; BLK for a block mapping.
  assert.match(
    arm.stdout,
    /\n0x[0-9a-f]{16}-0x[0-9a-f]{16} {11}2M PMD {7}ro x {2}SHD AF {8}BLK UXN {4}MEM\/NORMAL\n/,
  );
});

test('ptdump refuses an unknown policy even without a workload', async () => {
  assertUsageError(await execmemAsync(['ptdump', '--policy', 'nosuch']), /unknown policy 'nosuch'/);
});

test('ptdump --json has the documented keys', async (_t) => {
  const r = await execmemAsync([
    'ptdump',
    '--json',
    '--workload',
    'trampolines',
    '--scale',
    '0.05',
    '--policy',
    'module_alloc',
  ]);
  assertAvailable(r);
  const doc = parseJson(r);
  assertKeys(doc, ['arch', 'seed', 'workload', 'policy', 'range', 'mapped', 'lines', 'failures']);
  assert.equal(doc.policy, 'module_alloc');
  assert.ok(Array.isArray(doc.lines) && doc.lines.length > 0);
});

test('ptdump refuses an unknown policy as bad usage', async (_t) => {
  const r = await execmemAsync(['ptdump', '--workload', 'mixed', '--policy', 'nope']);
  assertAvailable(r);
  assertUsageError(r, /unknown policy 'nope' \(known: .*execmem/);
});

test('stats --json has the documented keys and execmem statistics', async (_t) => {
  const r = await execmemAsync(['stats', '--json', '--workload', 'bpf-churn', '--scale', '0.05']);
  assertAvailable(r);
  const doc = parseJson(r);
  assertKeys(doc, ['workload', 'arch', 'seed', 'failures', 'stats']);
  const stats = doc.stats as Record<string, unknown>;
  assertKeys(stats, ['backend', 'arch', 'types', 'pools', 'counters']);
  const bpf = (stats.types as Record<string, Record<string, number>>).bpf;
  assert.ok(bpf.liveObjects > 0, 'bpf objects live after bpf-churn');
});

test('stats prints the /proc-like text', async (_t) => {
  const r = await execmemAsync(['stats', '--workload', 'trampolines', '--scale', '0.05']);
  assertAvailable(r);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^# execmem on a simulated x86_64 machine/);
  assert.match(r.stdout, /execmem: backend sim, arch x86_64/);
});

test('report writes index.html with SVG charts carrying data, and summary.md', async (_t) => {
  const out = mkdtempSync(join(tmpdir(), 'execmem-cli-report-'));
  const workloads = ['bpf-aaronlu', 'debian-modules'];
  const r = await execmemAsync(
    ['report', '--json', '--scale', '0.02', '--workloads', workloads.join(','), '--out', out],
    180_000,
  );
  assertAvailable(r);
  const doc = parseJson(r);
  assertKeys(doc, ['html', 'markdown', 'generatedAt', 'runs', 'notes', 'command']);
  const runs = doc.runs as {
    workload: string;
    policies: { name: string; metrics: Record<string, number> }[];
  }[];
  assert.deepEqual(
    runs.map((x) => x.workload),
    workloads,
  );
  for (const run of runs) {
    assert.ok(run.policies.length >= 2);
    for (const p of run.policies) assert.equal(p.metrics.wxViolations, 0, `${run.workload}/${p.name} W^X`);
  }
  const html = readFileSync(join(out, 'index.html'), 'utf8');
  const figures = [...html.matchAll(/<figure class="chart" data-chart="([^"]+)">([\s\S]*?)<\/figure>/g)];
  assert.equal(figures.length, 7 + workloads.length); // kernel time first (issue 12), then six
  for (const [, id, inner] of figures) {
    assert.match(inner, /<svg /, id);
    assert.ok((inner.match(/<path /g)?.length ?? 0) >= 4, `${id}: drawn paths`);
  }
  const areaPictures = html.match(/<svg [^>]*class="area-map"/g) ?? [];
  assert.equal(
    areaPictures.length,
    runs.reduce((n, x) => n + x.policies.length, 0),
  );
  assert.ok(html.includes('What is modelled and what is real'));
  // The Debian workload's provenance is stated (sizes measured from a real package).
  assert.ok(
    (doc.notes as string[]).some((n) => /debian-modules: section sizes of the \d+ modules of /.test(n)),
  );
  const md = readFileSync(join(out, 'summary.md'), 'utf8');
  for (const w of workloads) assert.ok(md.includes(`## ${w}`));
  assert.ok(existsSync(doc.html as string));
});

test('host --json: real JIT functions give the right answers, no W+X mapping, trap fill after free', async (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    t.skip('the host backend needs Linux x86-64');
    return;
  }
  for (const mode of ['dualmap', 'mprotect']) {
    const r = await execmemAsync(['host', '--json', '--mode', mode]);
    assertAvailable(r);
    const doc = parseJson(r);
    assertKeys(doc, ['mode', 'modeReason', 'functions', 'maps', 'wxMappings', 'freed']);
    assert.equal(doc.mode, mode);
    const fns = doc.functions as { name: string; result: number; expected: number }[];
    assert.equal(fns.length, 5);
    for (const f of fns) assert.equal(f.result, f.expected, f.name);
    assert.equal(doc.wxMappings, 0);
    const maps = doc.maps as string[];
    assert.ok(
      maps.some((l) => / r-x. /.test(l)),
      `an executable view is listed (${mode})`,
    );
    if (mode === 'dualmap')
      assert.ok(
        maps.some((l) => / rw-s .*memfd:/.test(l)),
        'the RW alias is listed',
      );
    assert.equal((doc.freed as { trapPattern: boolean }).trapPattern, true);
  }
});

test('host refuses an unknown mode as bad usage', async () => {
  assertUsageError(await execmemAsync(['host', '--mode', 'rwx']), /unknown mode 'rwx'/);
});

test('compare and report print the same columns, units and legend (issue 13 item 9)', async () => {
  const out = mkdtempSync(join(tmpdir(), 'execmem-cli-legend-'));
  const common = ['--policies', 'module_alloc,execmem', '--scale', '0.01'];
  const [compare, report] = await Promise.all([
    execmemAsync(['compare', '--workload', 'bpf-churn', ...common]),
    execmemAsync(['report', '--workloads', 'bpf-churn', ...common, '--out', out], 120_000),
  ]);
  assert.equal(compare.status, 0, compare.stderr);
  assert.equal(report.status, 0, report.stderr);
  const header = (text: string) =>
    (text.split('\n').find((l) => l.startsWith('policy ')) ?? '').split(/ {2,}/).filter((c) => c !== '');
  const compareColumns = header(compare.stdout);
  const reportColumns = header(report.stdout);
  assert.ok(reportColumns.length >= 8, reportColumns.join('|'));
  for (const c of reportColumns)
    assert.ok(compareColumns.includes(c), `report column '${c}' is compare's too`);
  const row = (text: string, name: string) => text.split('\n').find((l) => l.startsWith(`${name} `)) ?? '';
  // The same figure is printed the same way (units, thousands separators).
  for (const unit of [/\d+\.\d{2}x/, /\d+\.\d%/, /\d(\.\d)? (B|KiB|MiB)\b/]) {
    assert.match(row(compare.stdout, 'module_alloc'), unit);
    assert.match(row(report.stdout, 'module_alloc'), unit);
  }
  assert.doesNotMatch(compare.stdout, /^module_alloc\*/m, 'no marker the report does not use');
  for (const legend of [/^Columns: kernel = the Linux version/m, /^iTLB miss\/M = misses per million/m]) {
    assert.match(compare.stdout, legend);
    assert.match(report.stdout, legend);
  }
});
