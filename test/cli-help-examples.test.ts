/**
 * Every example in every `--help` runs and prints what it promises (issue 13 item 13).
 *
 * How: the test walks the command tree from `execmem --help` (the "Commands:" sections), takes
 * every "  $ execmem ..." line under "Examples:", and runs it as a user would (a child process,
 * in a fresh temporary directory). A `| jq FILTER` tail is evaluated here in JavaScript (jq may
 * not be installed): the filter must select something that is not null. The promise of each
 * example is checked by PROMISES (a pattern its output must match); an example without an entry
 * must still exit 0 and print something.
 *
 * Workload sizes: an example of a command that takes --scale and gives none runs with
 * `--scale 0.01` added (same code path, same output shape, a hundredth of the events), so the
 * whole set takes seconds, not the minutes `execmem report` takes at full size. Examples that
 * need the Debian package run only when it is fetched (unless EXECMEM_REQUIRE_DATASET=1, as in
 * .ci/run, where its absence fails), `dataset fetch` only when the package it resolves to is the
 * one in the cache (it would download otherwise), `dataset clean` against a scratch cache, and
 * `host` only on Linux x86-64.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, test } from 'node:test';
import { defaultCacheDir, findCachedDataset } from '../src/workloads/dataset/dataset.js';
import { formatRecordLine, importText } from '../src/workloads/import/index.js';
import { saveTrace } from '../src/workloads/trace.js';
import { execmem, execmemAsync } from './cli-helpers.js';

interface Example {
  /** The example line after "$ ", without its comment. */
  readonly line: string;
  /** The file a `> FILE` tail redirects stdout to (in the example's directory), or null. */
  readonly redirect: string | null;
  /** The help it was found in, e.g. "execmem dataset fetch". */
  readonly help: string;
  readonly args: string[];
  /** The jq filter of a `| jq ...` tail, or null. */
  readonly jq: string | null;
}

/** What an example promises, by its line: a pattern its stdout must match. */
const PROMISES: Readonly<Record<string, RegExp>> = {
  'execmem report': /report: .*index\.html\nsummary: .*summary\.md/,
  'execmem compare --workload mixed': /^workload mixed, arch x86_64[\s\S]*execmem +ours/,
  'execmem compare --workload trampolines --seeds 1-3':
    /seeds 1,2,3[\s\S]*execmem +ours[\s\S]*median over 3 seeds/,
  'execmem ptdump --workload bpf-churn': /---\[ Modules \]---\n0x[0-9a-f]{16}-0x[0-9a-f]{16} +\d+[KM] /,
  'execmem stats --json': /"stats": \{/,
  'execmem host': /JIT functions written through execmem[\s\S]*after free\(0x[0-9a-f]+\): cc cc/,
  'execmem ptdump':
    /nothing is mapped in the module area yet[\s\S]*---\[ Modules \]---\n---\[ End Modules \]---/,
  'execmem ptdump --workload bpf-churn --policy module_alloc --all':
    /---\[ High Kernel Mapping \]---[\s\S]* pte\n/,
  'execmem ptdump --workload mixed --arch arm64 --json': /"---\[ Modules start \]---"[\s\S]* BLK /,
  'execmem stats': /execmem: backend sim, arch x86_64/,
  'execmem stats --arch arm64 --scale 0.1': /execmem: backend sim, arch arm64/,
  'execmem report --scale 0.01 --out /tmp/execmem-report --no-modules':
    /report: \/tmp\/execmem-report\/index\.html/,
  'execmem report --workloads mixed,bpf-churn --policies execmem,bpf_prog_pack':
    /^mixed \(x86_64[\s\S]*^bpf-churn \(x86_64/m,
  'execmem compare --workload bpf-aaronlu --policies module_alloc,bpf_prog_pack,execmem --age 0.2':
    /aged 0\.2[\s\S]*bpf_prog_pack/,
  'execmem host --mode mprotect': /^host backend: mprotect/,
  'execmem dataset fetch': /^linux-image-\S+ \S+ \(kernel [^)]+\): \d+ modules[\s\S]*download: [\d.]+ MB/,
  'execmem dataset info': /\d+ modules\n[\s\S]*extracted tree: [\d.]+ MB/,
  'execmem dataset table --out /tmp/modules.json': /^wrote \/tmp\/modules\.json: \d+ modules of /,
  'execmem dataset clean': /^removed .*downloads: [\d.]+ MB[\s\S]*freed /,
  'execmem modules load --all': /^package linux-image-[\s\S]*modules loaded, 0 failed/,
};

/** The lines of an "Examples:" section; the sub-commands of a "Commands:" section. */
function parseHelp(text: string): { examples: string[]; commands: string[] } {
  const examples = [...text.matchAll(/^ {2}\$ (execmem .*)$/gm)].map((m) => m[1]);
  const section = /\nCommands:\n([\s\S]*?)(\n\n|$)/.exec(text)?.[1] ?? '';
  const commands = [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]).filter((c) => c !== 'help');
  return { examples, commands };
}

/** Split a command line as a POSIX shell would for these simple cases (words, '...' quoting). */
function words(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

function toExample(text: string, help: string): Example {
  const line = text.replace(/\s+#.*$/, '').trim();
  const [piped, filter] = line.split(/\s+\|\s+jq\s+/);
  const [command, redirect] = piped.split(/\s+>\s+/);
  const args = words(command).slice(1);
  const jq = filter === undefined ? null : (words(filter)[0] ?? '.');
  return { line, help, args, jq, redirect: redirect === undefined ? null : redirect.trim() };
}

/**
 * The input files an example names, made in its directory before it runs: a bpftrace recording
 * (rec.txt), a trace imported from it (rec.trace.json), and two compare outputs (before.json,
 * after.json) as a user would have made them with the examples before.
 */
async function prepareInputs(ex: Example, cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  const names = new Set(ex.args);
  const recording = [
    '# execmem-record/1 clock=nsecs',
    formatRecordLine({
      ns: 1000n,
      tid: 7,
      probe: 'execmem_alloc',
      type: 0,
      sizeBytes: 8192,
      addr: 0xffffffffc0001000n,
      depth: 0,
    }),
    formatRecordLine({ ns: 2000n, tid: 7, probe: 'execmem_free', addr: 0xffffffffc0001000n, depth: 0 }),
  ].join('\n');
  if (names.has('rec.txt') || names.has('rec.trace.json'))
    writeFileSync(join(cwd, 'rec.txt'), `${recording}\n`);
  if (names.has('rec.trace.json') && ex.args[1] !== 'import') {
    saveTrace(join(cwd, 'rec.trace.json'), importText(recording, 'bpftrace', { name: 'rec', seed: 1 }).trace);
  }
  for (const f of ['before.json', 'after.json']) {
    if (!names.has(f) || ex.args[0] !== 'diff') continue;
    const r = await execmemAsync(
      ['--quiet', 'compare', '--workload', 'mixed', '--json', '--scale', '0.01'],
      180_000,
      { cwd, env },
    );
    assert.equal(r.status, 0, r.stderr);
    writeFileSync(join(cwd, f), r.stdout);
  }
}

/** A jq path filter (.a.b[0].c) evaluated in JavaScript: jq may not be installed. */
export function jqPath(doc: unknown, filter: string): unknown {
  assert.match(filter, /^(\.[A-Za-z_]\w*|\[\d+\]|\.)+$/, `only jq paths are supported: ${filter}`);
  let v: unknown = doc;
  for (const m of filter.matchAll(/\.([A-Za-z_]\w*)|\[(\d+)\]/g)) {
    if (v === null || typeof v !== 'object') return null;
    v = m[1] !== undefined ? (v as Record<string, unknown>)[m[1]] : (v as unknown[])[Number(m[2])];
  }
  return v ?? null;
}

/** The --help text of every command, by its path ("", "report", "dataset fetch"...). */
const helpTexts = new Map<string, string>();

function collectExamples(): Example[] {
  const seen = new Map<string, Example>();
  const visit = (path: string[]): void => {
    const r = execmem([...path, '--help']);
    assert.equal(r.status, 0, `execmem ${path.join(' ')} --help: ${r.stderr}`);
    helpTexts.set(path.join(' '), r.stdout);
    const { examples, commands } = parseHelp(r.stdout);
    const help = ['execmem', ...path].join(' ');
    for (const e of examples) {
      const ex = toExample(e, help);
      if (!seen.has(ex.line)) seen.set(ex.line, ex);
    }
    for (const c of commands) visit([...path, c]);
  };
  visit([]);
  return [...seen.values()];
}

const datasetRoot = findCachedDataset(defaultCacheDir());
const requireDataset = process.env.EXECMEM_REQUIRE_DATASET === '1';

/** The package `dataset fetch [--package P]` would fetch, if apt knows it (as resolvePackage does). */
function resolvedPackage(args: readonly string[]): string | null {
  const i = args.indexOf('--package');
  const a = args.indexOf('--arch');
  const f = args.indexOf('--flavour');
  const deb = a >= 0 ? args[a + 1] : 'amd64';
  const flavour = f >= 0 ? args[f + 1] : 'cloud';
  const host = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout?.trim();
  const name = flavour === 'generic' ? `linux-image-${deb}` : `linux-image-${flavour}-${deb}`;
  const meta = i >= 0 ? args[i + 1] : deb === host ? name : `${name}:${deb}`;
  const r = spawnSync('apt-cache', ['depends', meta], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return (
    /Depends: (linux-image-[^\s:]+)/.exec(r.stdout ?? '')?.[1] ?? (/^linux-image-\d/.test(meta) ? meta : null)
  );
}

/** Why an example cannot run here (it is then skipped), or null. */
function skipReason(ex: Example): string | null {
  const [cmd, sub] = ex.args;
  if (cmd === 'host' && (process.platform !== 'linux' || process.arch !== 'x64'))
    return 'the host backend needs Linux x86-64';
  if (ex.args.includes('/proc/modules') && !existsSync('/proc/modules'))
    return 'this machine has no /proc/modules (a container without module support)';
  const needsDataset =
    cmd === 'modules' || (cmd === 'dataset' && sub !== 'clean' && !ex.args.includes('--dir'));
  if (needsDataset && datasetRoot === null && !requireDataset) return 'the Debian dataset is not fetched';
  if (cmd === 'dataset' && sub === 'fetch' && !ex.args.includes('--dir')) {
    // Never a download from the tests: only a fetch of what the cache already holds.
    const pkg = resolvedPackage(ex.args);
    if (pkg === null || !existsSync(join(defaultCacheDir(), 'debian', pkg, 'index.json')))
      return `'dataset fetch' would download ${pkg ?? 'a package apt does not know'}`;
  }
  return null;
}

const examples = collectExamples();
/** Does the example's command take --scale (its own --help lists it)? */
function takesScale(ex: Example): boolean {
  const sub =
    ex.args[0] === 'dataset' || ex.args[0] === 'modules' ? ex.args.slice(0, 2) : ex.args.slice(0, 1);
  return /--scale <x>/.test(helpTexts.get(sub.join(' ')) ?? '');
}

test('the help texts have examples, each with a known promise or at least an output', () => {
  assert.ok(examples.length >= 20, `only ${examples.length} examples found`);
  for (const line of Object.keys(PROMISES)) {
    assert.ok(
      examples.some((e) => e.line === line),
      `PROMISES names '${line}', which no --help shows any more`,
    );
  }
});

test('stats --help shows a jq path that selects something (issue 13: .types.bpf printed null)', () => {
  const stats = examples.find((e) => e.help === 'execmem stats' && e.jq !== null);
  assert.ok(stats, 'stats --help has a jq example');
  assert.equal(stats.jq, '.stats.types.bpf');
  assert.equal(jqPath({ stats: { types: { bpf: { liveObjects: 3 } } } }, '.stats.types.bpf') !== null, true);
  assert.equal(jqPath({ stats: {} }, '.types.bpf'), null);
});

// Two at a time: most of an example's time is a child process starting and waiting.
describe('every --help example', { concurrency: 2 }, () => {
  for (const ex of examples) {
    it(`runs: ${ex.line} (from ${ex.help} --help)`, async (t) => {
      const why = skipReason(ex);
      if (why !== null) {
        t.skip(why);
        return;
      }
      const cwd = mkdtempSync(join(tmpdir(), 'execmem-example-'));
      const env: NodeJS.ProcessEnv = { ...process.env };
      if (ex.args[0] === 'dataset' && ex.args[1] === 'clean') {
        // Never the user's cache: a scratch one holding what fetch would have left.
        const cache = join(cwd, 'cache');
        mkdirSync(join(cache, 'downloads'), { recursive: true });
        writeFileSync(join(cache, 'downloads', 'linux-image-test_1.0_amd64.deb'), Buffer.alloc(4096));
        env.EXECMEM_CACHE_DIR = cache;
      }
      await prepareInputs(ex, cwd, env);
      const args = [...ex.args];
      if (!args.includes('--scale') && takesScale(ex) && !args.includes('--trace'))
        args.push('--scale', '0.01');
      const r = await execmemAsync(['--quiet', ...args], 180_000, { cwd, env });
      assert.equal(r.status, 0, `${ex.line}: exit ${r.status}\n${r.stderr}`);
      if (ex.redirect !== null) writeFileSync(join(cwd, ex.redirect), r.stdout);
      const output = ex.redirect === null ? r.stdout : readFileSync(join(cwd, ex.redirect), 'utf8');
      assert.notEqual(output.trim(), '', `${ex.line}: printed nothing`);
      if (ex.jq !== null) {
        const value = jqPath(JSON.parse(r.stdout), ex.jq);
        assert.notEqual(value, null, `${ex.line}: jq ${ex.jq} selects null`);
      }
      const promise = PROMISES[ex.line];
      if (promise !== undefined)
        assert.match(r.stdout, promise, `${ex.line}: output:\n${r.stdout.slice(0, 3000)}`);
    });
  }
});
