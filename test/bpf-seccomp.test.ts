/**
 * The seccomp oracle: real seccomp filters (libseccomp's output, for the rules systemd makes),
 * converted and JIT'd by src/consumers/bpf and run for real on the host backend over generated
 * struct seccomp_data records, must return exactly what an independent interpreter of the classic
 * program returns, on every record. The filters are the 253 of data/bpf-real.json (this machine's
 * sandboxed systemd 252 units) and filters built live by scripts/seccomp-export.c with gcc against
 * libseccomp-dev. libseccomp ships no simulator callable from a program (its scmp_bpf_sim is a
 * source-tree tool Debian does not install), so the interpreter (interp.ts) is the oracle.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng } from '../src/base/rng.js';
import { parseClassicText, SECCOMP_DATA_BYTES } from '../src/consumers/bpf/classic.js';
import { HostBpfRunner } from '../src/consumers/bpf/host-run.js';
import type { ClassicInsn } from '../src/consumers/bpf/insn.js';
import { runClassic } from '../src/consumers/bpf/interp.js';
import { systemdFilterSpecs } from '../src/consumers/bpf/systemd.js';
import { Execmem } from '../src/execmem/execmem.js';
import { type HostBackend, openHost } from '../src/host/index.js';
import { BPF_REAL_DATA } from '../src/workloads/bpf-real.js';
import { assertNoWxInArena } from './helpers/bpf-host.js';
import { withTempDir } from './helpers/tempdir.js';
import { hasTool } from './helpers/toolchain.js';

const MiB = 1024 * 1024;
const RECORDS = 800;
const AUDIT_ARCH_X86_64 = 0xc000003e;
const AUDIT_ARCH_I386 = 0x40000003;

/** A struct seccomp_data: nr, arch, instruction_pointer, args[6], with values filters test. */
function genRecord(rng: Rng): Uint8Array {
  const b = new Uint8Array(SECCOMP_DATA_BYTES);
  const dv = new DataView(b.buffer);
  // Half the records call a syscall some filter inspects (x86-64 numbers): socket, clone3, unshare,
  // clone, mmap, mprotect, sched_setscheduler, personality, chmod, open, openat, setns, syslog,
  // sethostname; the rest any number, x32 numbers, or -1.
  const watched = [41, 435, 272, 56, 9, 10, 144, 135, 90, 2, 257, 308, 103, 170];
  const r = rng.next();
  const nr =
    r < 0.5
      ? rng.pick(watched)
      : r < 0.6
        ? (0x40000000 | rng.int(0, 547)) >>> 0
        : r < 0.62
          ? 0xffffffff
          : rng.int(0, 460);
  dv.setUint32(0, nr, true);
  dv.setUint32(
    4,
    rng.pick([AUDIT_ARCH_X86_64, AUDIT_ARCH_X86_64, AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xdeadbeef]),
    true,
  );
  dv.setBigUint64(8, BigInt(rng.int(0, 2 ** 31)) << 12n, true);
  for (let a = 0; a < 6; a++) {
    const interesting = [
      0, 1, 2, 3, 4, 5, 6, 7, 10, 16, 17, 45, 0o4000, 0o2000, 0o6755, 64, 0x8000, 0x20000, 0x10000000,
      0x40000000, 0x80,
    ];
    const lo =
      rng.next() < 0.6
        ? rng.pick(interesting) | (rng.next() < 0.3 ? rng.pick(interesting) : 0)
        : rng.int(0, 0xffffffff);
    const hi = rng.next() < 0.85 ? 0 : rng.int(0, 0xffffffff);
    dv.setUint32(16 + a * 8, lo >>> 0, true);
    dv.setUint32(20 + a * 8, hi >>> 0, true);
  }
  return b;
}

const skip = hasTool('gcc') || process.env.CI ? false : 'gcc not installed';

describe('seccomp filters: our JIT on the host agrees with the classic interpreter', { skip }, () => {
  let h: HostBackend;
  let em: Execmem;
  let runner: HostBpfRunner;
  before(() => {
    h = openHost({ textReserveBytes: 64 * MiB, dataReserveBytes: 16 * MiB });
    em = new Execmem(h);
    runner = new HostBpfRunner(em, h, 9);
  });
  after(() => {
    runner.close();
    em.shrink({ keepSpare: false });
    h.close();
  });

  function agree(
    programs: readonly { label: string; prog: ClassicInsn[] }[],
    seed: number,
  ): Map<number, number> {
    const loaded = programs.map((p) => ({ ...p, f: runner.load(p.prog, 'seccomp') }));
    const rng = new Rng(seed);
    const actions = new Map<number, number>();
    for (let r = 0; r < RECORDS; r++) {
      const rec = genRecord(rng);
      const ctx = runner.setSeccompData(rec);
      for (const x of loaded) {
        const got = x.f.call(ctx);
        const want = runClassic(x.prog, { kind: 'seccomp', bytes: rec });
        assert.equal(
          got,
          want,
          `${x.label}, record ${r}: JIT 0x${got.toString(16)}, interpreter 0x${want.toString(16)}`,
        );
        actions.set(got, (actions.get(got) ?? 0) + 1);
      }
    }
    for (const x of loaded) runner.unload(x.f);
    return actions;
  }

  test('the 253 filters of data/bpf-real.json (systemd 252 units, libseccomp 2.5.4)', () => {
    const data = JSON.parse(readFileSync(BPF_REAL_DATA, 'utf8')) as {
      seccomp: { label: string; program: string }[];
    };
    const programs = data.seccomp.map((s) => ({ label: s.label, prog: parseClassicText(s.program) }));
    assert.ok(programs.length >= 200);
    const actions = agree(programs, 3);
    // The records reach every outcome: allow, errno (EPERM, EAFNOSUPPORT, ENOSYS) and kill.
    for (const a of [0x7fff0000, 0x00050001, 0x00050061, 0x00050026, 0x00000000]) {
      assert.ok(
        (actions.get(a) ?? 0) > 0,
        `action 0x${a.toString(16)} never returned: ${[...actions.keys()].map((k) => k.toString(16))}`,
      );
    }
    assertNoWxInArena(h);
  });

  test('filters built live by libseccomp (gcc -lseccomp scripts/seccomp-export.c)', () => {
    withTempDir('bpf-seccomp-', (dir) => {
      const exe = join(dir, 'seccomp-export');
      execFileSync('gcc', [
        '-O2',
        '-o',
        exe,
        join(process.cwd(), 'scripts', 'seccomp-export.c'),
        '-lseccomp',
      ]);
      const specs = systemdFilterSpecs({
        name: 'test.service',
        allow: [
          'read',
          'write',
          'openat',
          'close',
          'mmap',
          'exit_group',
          'futex',
          'socket',
          'clone',
          'unshare',
        ],
        nativeOnly: true,
        memoryDenyWriteExecute: true,
        restrictNamespaces: true,
        restrictRealtime: true,
        restrictSuidSgid: true,
        lockPersonality: true,
        addressFamilies: [1, 2, 10, 16],
      });
      const text = execFileSync(exe, {
        input: specs.map((s) => s.spec).join(''),
        stdio: ['pipe', 'pipe', 'ignore'],
      }).toString();
      const progs = text.split(/\n(?=\d+\n)/).map((t) => parseClassicText(t));
      assert.equal(progs.length, specs.length);
      agree(
        progs.map((prog, i) => ({ label: specs[i].label, prog })),
        4,
      );
    });
  });
});
