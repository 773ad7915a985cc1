/**
 * Faults that only real hardware can deliver, observed from a parent process: a store to the RX
 * view dies with SIGSEGV, executing the alias dies with SIGSEGV, a raw jump into freed
 * (trap-filled) memory dies with SIGTRAP (the backend's own callable refuses it first), and
 * RLIMIT_FSIZE never turns into SIGXFSZ.
 *
 * The child is this same file started with `--host-child <scenario> <mode>` (no separate fixture,
 * so the test runner never mistakes a fixture for a test). Each child prints a marker right before
 * the faulting instruction, so the parent knows the signal came from that step and not from setup.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { Execmem } from '../src/execmem/execmem.js';
import { genConst, genLinear, type HostBackend, openHost } from '../src/host/index.js';
import { memoryView } from '../src/host/libc.js';

const MiB = 1024 * 1024;
const SELF = fileURLToPath(import.meta.url);
const SIGXFSZ = 25;

interface ChildResult {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** For assertion messages: everything the child said and how it ended. */
function why(r: ChildResult): string {
  return `status ${r.status}, signal ${r.signal}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr.slice(0, 2000)}`;
}

function runChild(scenario: string, mode = 'dualmap'): ChildResult {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, [SELF, '--host-child', scenario, mode], {
    env,
    encoding: 'utf8',
    timeout: 20000,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function setFsizeLimitAndDefaultSigxfsz(bytes: number): void {
  const libc = koffi.load('libc.so.6');
  const rlimit = koffi.struct({ cur: 'uint64_t', max: 'uint64_t' });
  const setrlimit = libc.func('setrlimit', 'int', ['int', koffi.pointer(rlimit)]);
  // Node ignores SIGXFSZ; restore the default (terminate) so an oversized ftruncate would kill us.
  const signal = libc.func('uintptr_t signal(int sig, uintptr_t handler)');
  const RLIMIT_FSIZE = 1;
  assert.equal(setrlimit(RLIMIT_FSIZE, { cur: BigInt(bytes), max: BigInt(bytes) }), 0);
  signal(SIGXFSZ, 0);
}

function child(scenario: string, mode: 'dualmap' | 'mprotect'): void {
  const say = (s: string) => process.stdout.write(`${s}\n`);
  if (scenario === 'fsize-control') {
    setFsizeLimitAndDefaultSigxfsz(8 * MiB);
    const libc = koffi.load('libc.so.6');
    const memfd = libc.func('int memfd_create(const char *name, unsigned int flags)');
    const ftruncate = libc.func('int ftruncate(int fd, int64_t len)');
    const fd = memfd('oversized', 1);
    say('ftruncate');
    say(`rc ${ftruncate(fd, 16 * MiB)}`);
    return;
  }
  if (scenario === 'fsize') {
    setFsizeLimitAndDefaultSigxfsz(8 * MiB);
    const h = openHost({ mode: 'dualmap', textReserveBytes: 64 * MiB, dataReserveBytes: 64 * MiB });
    const cap = h.report().families[0].capacityBytes;
    const em = new Execmem(h);
    let blocks = 0;
    let code = '';
    try {
      for (;;) {
        em.allocVa('module_text', 2 * MiB - 4096);
        blocks++;
      }
    } catch (e) {
      code = (e as { code?: string }).code ?? String(e);
    }
    const d = em.allocVa('module_data', 64);
    say(
      JSON.stringify({
        mode: h.mode,
        cap,
        blocks,
        code,
        dataCap: h.report().families[1].capacityBytes,
        data: d > 0,
      }),
    );
    return;
  }
  const h: HostBackend = openHost({ mode, textReserveBytes: 8 * MiB, dataReserveBytes: 2 * MiB });
  const em = new Execmem(h);
  const p = em.allocVa('bpf', 64);
  em.updateVa(p, genLinear(2, 1));
  const f = h.fn(p, 'int (int, int)');
  say(`ok ${f(20, 1)}`);
  if (scenario === 'store-rx') {
    const view = memoryView(p, 64);
    say('storing');
    view[0] = 0x90;
    say('store survived');
  } else if (scenario === 'call-freed') {
    em.freeVa(p);
    // The backend's callable refuses freed code with a typed error (call.ts) ...
    try {
      f(20, 1);
      say('wrapper called freed code');
    } catch (e) {
      say(`refused ${(e as { code?: string }).code}`);
    }
    // ... and the memory itself traps: a raw jump there (no checks) hits the trap fill.
    const raw = koffi.decode(p, koffi.proto('int (int, int)')) as (a: number, b: number) => number;
    say('calling freed');
    say(`returned ${raw(20, 1)}`);
  } else if (scenario === 'call-alias') {
    const fam = h.report().families[0];
    const alias = p - Number.parseInt(fam.viewBase, 16) + Number.parseInt(fam.aliasBase!, 16);
    const viaAlias = koffi.decode(alias, koffi.proto('int (int, int)')) as (a: number, b: number) => number;
    say('calling alias');
    say(`returned ${viaAlias(20, 1)}`);
  } else if (scenario === 'call-live') {
    const q = em.allocVa('bpf', 64);
    em.updateVa(q, genConst(5));
    say(`returned ${h.fn(q, 'int (void)')()}`);
  }
}

if (process.argv[2] === '--host-child') {
  child(process.argv[3], process.argv[4] as 'dualmap' | 'mprotect');
} else {
  describe('host faults (child processes)', () => {
    for (const mode of ['dualmap', 'mprotect'] as const) {
      test(`${mode}: a plain store to published code dies with SIGSEGV`, () => {
        const r = runChild('store-rx', mode);
        assert.match(r.stdout, /ok 42\nstoring\n/, why(r));
        assert.equal(r.signal, 'SIGSEGV', why(r));
        assert.doesNotMatch(r.stdout, /survived/);
      });

      test(`${mode}: calling a freed allocation is refused (EFAULT); a raw jump there hits the trap fill (SIGTRAP)`, () => {
        const r = runChild('call-freed', mode);
        assert.match(r.stdout, /ok 42\nrefused EFAULT\ncalling freed\n/, why(r));
        assert.equal(r.signal, 'SIGTRAP', why(r));
        assert.doesNotMatch(r.stdout, /returned/);
      });

      test(`${mode}: the control child (live code) exits normally`, () => {
        const r = runChild('call-live', mode);
        assert.equal(r.signal, null, why(r));
        assert.equal(r.status, 0, why(r));
        assert.match(r.stdout, /ok 42\nreturned 5\n/, why(r));
      });
    }

    test('dualmap: executing through the RW alias dies with SIGSEGV (alias is not executable)', () => {
      const r = runChild('call-alias');
      assert.match(r.stdout, /ok 42\ncalling alias\n/, why(r));
      assert.equal(r.signal, 'SIGSEGV', why(r));
    });

    test('RLIMIT_FSIZE: an oversized memfd kills (control), the host arena is clipped instead', () => {
      const control = runChild('fsize-control');
      assert.match(control.stdout, /ftruncate\n/, why(control));
      assert.equal(control.signal, 'SIGXFSZ', 'the control proves SIGXFSZ is armed in the child');
      const r = runChild('fsize');
      assert.equal(r.signal, null, why(r));
      assert.equal(r.status, 0, why(r));
      const got = JSON.parse(r.stdout.trim().split('\n').pop()!);
      assert.equal(got.mode, 'dualmap');
      assert.equal(got.cap, 8 * MiB, 'text arena clipped to RLIMIT_FSIZE');
      assert.equal(got.code, 'ENOSPC', 'a full clipped arena is a typed error');
      assert.equal(got.blocks, 4, 'four 2 MiB text blocks fit in 8 MiB');
      assert.equal(got.dataCap, 8 * MiB);
      assert.equal(got.data, true, 'the process lives on and the data arena still works');
    });
  });
}
