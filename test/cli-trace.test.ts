/**
 * The trace commands as a user runs them: `execmem trace import` on a recording, the trace it
 * writes replayed by `execmem compare --trace` and `execmem report --trace`, and the exit-2
 * errors for files that cannot be read or are not valid (naming the file and the line or event).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { assertUsageError, execmem } from './cli-helpers.js';
import { withTempDir } from './helpers/tempdir.js';

/** A recording as scripts/record-execmem.bt prints it (6.10+: execmem_alloc nested in module_memory_alloc). */
const RECORDING = [
  '# execmem-record/1 clock=nsecs fields: <ns> <tid> <probe> key=value...',
  'Attaching 15 probes...',
  '1000 50 execmem_alloc type=0 size=16384 addr=0xffffffffc0400000 depth=1',
  '1001 50 module_memory_alloc type=0 size=16384 addr=0xffffffffc0400000 mod=xfs depth=0',
  '1002 50 execmem_alloc type=4 size=8192 addr=0xffffffffc0404000 depth=1',
  '1003 50 module_memory_alloc type=1 size=8192 addr=0xffffffffc0404000 mod=xfs depth=0',
  '1004 50 execmem_alloc type=4 size=4096 addr=0xffffffffc0406000 depth=1',
  '1005 50 module_memory_alloc type=3 size=4096 addr=0xffffffffc0406000 mod=xfs depth=0',
  '1006 50 execmem_alloc type=0 size=4096 addr=0xffffffffc0407000 depth=1',
  '1007 50 module_memory_alloc type=4 size=4096 addr=0xffffffffc0407000 mod=xfs depth=0',
  '1010 60 execmem_alloc type=3 size=2097152 addr=0xffffffffc0600000 depth=2',
  '1011 60 bpf_prog_pack_alloc size=384 addr=0xffffffffc0600000 depth=1',
  '1012 60 bpf_jit_binary_pack_alloc proglen=300 addr=0xffffffffc0600000 depth=0',
  '1013 60 bpf_prog_pack_alloc size=128 addr=0xffffffffc0600180 depth=1',
  '1014 60 bpf_jit_binary_pack_alloc proglen=80 addr=0xffffffffc0600180 depth=0',
  '1020 7 execmem_free addr=0xffffffffc0407000 depth=0',
  '1030 60 bpf_prog_pack_free addr=0xffffffffc0600180 depth=0',
  '1040 70 execmem_alloc type=2 size=350 addr=0xffffffffc0408000 depth=0',
  '',
].join('\n');

/** Live bytes after the recording: xfs text 16 KiB + data 8 KiB + ro_after_init 4 KiB, one 384 B image, 350 B ftrace. */
const LIVE_BYTES = 16384 + 8192 + 4096 + 384 + 350;

describe('execmem trace import / compare --trace / report --trace', () => {
  it('imports a recording, and compare --trace replays it through every design asked', () => {
    withTempDir('trace-cli-', (dir) => {
      const rec = join(dir, 'rec.txt');
      const out = join(dir, 'rec.trace.json');
      writeFileSync(rec, RECORDING);
      const imp = execmem(['trace', 'import', rec, '--out', out]);
      assert.equal(imp.status, 0, imp.stderr);
      assert.match(
        imp.stdout,
        /imported .*rec\.txt \(bpftrace recording, 16 events\) as trace 'rec': 7 allocations, 2 frees, 1 module loads, 5 live/,
      );
      assert.match(imp.stdout, /note: 7 nested/);
      assert.match(imp.stdout, /execmem compare --trace /);
      const check = execmem(['trace', 'check', out, '--json']);
      assert.equal(check.status, 0, check.stderr);
      assert.equal(JSON.parse(check.stdout).ops.alloc, 7);

      const r = execmem([
        'compare',
        '--trace',
        out,
        '--policies',
        'module_alloc,execmem-6.10,execmem',
        '--json',
      ]);
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.equal(doc.workload, 'rec');
      assert.deepEqual(
        doc.policies.map((p: { name: string }) => p.name),
        ['module_alloc', 'execmem-6.10', 'execmem'],
      );
      for (const p of doc.policies) {
        assert.equal(p.metrics.failures, 0, `${p.name} failed events`);
        assert.equal(p.metrics.liveBytes, LIVE_BYTES, p.name);
      }
    });
  });

  it('prints the trace on stdout without --out (summary on stderr), and reads stdin as -', () => {
    withTempDir('trace-cli-', (dir) => {
      const rec = join(dir, 'rec.txt');
      writeFileSync(rec, RECORDING);
      const r = execmem(['trace', 'import', rec, '--name', 'my machine']);
      assert.equal(r.status, 0, r.stderr);
      const trace = JSON.parse(r.stdout);
      assert.equal(trace.format, 'execmem-trace/1');
      assert.equal(trace.name, 'my machine');
      assert.match(r.stderr, /as trace 'my machine'/);
    });
  });

  it('report --trace runs only the trace (without --workloads) and writes its CSV next to the HTML', () => {
    withTempDir('trace-cli-', (dir) => {
      const rec = join(dir, 'rec.txt');
      const trace = join(dir, 't.json');
      writeFileSync(rec, RECORDING);
      assert.equal(execmem(['trace', 'import', rec, '--out', trace]).status, 0);
      const out = join(dir, 'report');
      const r = execmem([
        'report',
        '--trace',
        trace,
        '--policies',
        'module_alloc,execmem',
        '--out',
        out,
        '--csv',
        '--json',
      ]);
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(r.stdout);
      assert.deepEqual(
        doc.runs.map((run: { workload: string }) => run.workload),
        ['rec'],
      );
      assert.deepEqual(doc.csv, [join(out, 'rec.csv')]);
      assert.match(readFileSync(join(out, 'rec.csv'), 'utf8'), /^workload,arch,seed,scale,policy,/);
      assert.match(doc.command, /--trace /);
    });
  });

  it('bad files are usage errors naming the file and the line or event', () => {
    withTempDir('trace-cli-', (dir) => {
      const missing = join(dir, 'nope.json');
      assertUsageError(
        execmem(['compare', '--trace', missing]),
        /--trace .*nope\.json: cannot read it \(ENOENT\)/,
      );
      assertUsageError(execmem(['compare', '--trace', dir]), /is a directory/);
      const bad = join(dir, 'bad.json');
      writeFileSync(
        bad,
        JSON.stringify({
          format: 'execmem-trace/1',
          name: 'x',
          seed: 1,
          events: [
            { op: 'alloc', id: 0, type: 'bpf', sizeBytes: 64 },
            { op: 'free', id: 3 },
          ],
        }),
      );
      assertUsageError(
        execmem(['compare', '--trace', bad]),
        /bad\.json: EEVENT: event 1: free: id 3 was never allocated/,
      );
      assertUsageError(
        execmem(['report', '--trace', bad, '--out', join(dir, 'r')]),
        /bad\.json: EEVENT: event 1/,
      );
      const rec = join(dir, 'rec.txt');
      writeFileSync(rec, RECORDING);
      assertUsageError(execmem(['compare', '--trace', rec]), /rec\.txt: not JSON .*execmem trace import/);
      assertUsageError(
        execmem(['compare', '--trace', bad, '--workload', 'mixed']),
        /--workload NAME or --trace FILE/,
      );
      writeFileSync(rec, `${RECORDING}1050 70 execmem_free addr=0xzz depth=0\n`);
      assertUsageError(
        execmem(['trace', 'import', rec]),
        /rec\.txt: bpftrace: line 19: addr=0xzz is not a 64-bit 0x hex address/,
      );
      const odd = join(dir, 'odd.txt');
      writeFileSync(odd, 'hello world\n');
      assertUsageError(
        execmem(['trace', 'import', odd]),
        /cannot tell the format of .*odd\.txt; give --format/,
      );
      assertUsageError(execmem(['trace', 'import', odd, '--format', 'perf']), /argument 'perf' is invalid/);
      assertUsageError(execmem(['trace', 'import', missing]), /cannot read .*nope\.json \(ENOENT\)/);
      const mixed = join(dir, 'mixed.json');
      writeFileSync(rec, RECORDING);
      assert.equal(execmem(['trace', 'import', rec, '--name', 'mixed', '--out', mixed]).status, 0);
      assertUsageError(
        execmem(['report', '--trace', mixed, '--workloads', 'mixed', '--out', join(dir, 'r')]),
        /two workloads of this report are named 'mixed'/,
      );
      assertUsageError(execmem(['trace', 'import', rec, '--out', '/proc/x']), /not under \/proc or \/sys/);
    });
  });
});
