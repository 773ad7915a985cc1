/**
 * The host backend against hostile callers (issue 16, items 2, 5 and 6), on real memory:
 * - spoofed lengths: a Uint8Array whose `length` lies (own property, subclass getter, Proxy in the
 *   prototype chain, Proxy of the array) never writes past the range its caller checked. In-process
 *   cases detect an overflow by reading the neighbouring allocation; the cases at a block's end,
 *   where an overflow would be a SIGSEGV, run in a child process (this file, `--host-child`);
 * - re-entry: the allocator's lock refuses a second acquire by the same thread (EDEADLK) and
 *   nothing changes, so a getter that frees during an update cannot free;
 * - after close(): every call fails with one code, ECLOSED, and `fn` refuses freed, never
 *   allocated and closed code instead of returning a function that would kill the process.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BackendError, type MapBlockRequest } from '../src/execmem/backend.js';
import { ExecmemError } from '../src/execmem/errors.js';
import { Execmem } from '../src/execmem/execmem.js';
import { byteCount, copyInto } from '../src/host/bytes.js';
import { genConst, type HostBackend, HostError, openHost } from '../src/host/index.js';

const MiB = 1024 * 1024;
const SELF = fileURLToPath(import.meta.url);
const MODES = ['dualmap', 'mprotect'] as const;

function open(mode: 'dualmap' | 'mprotect'): HostBackend {
  return openHost({ mode, textReserveBytes: 16 * MiB, dataReserveBytes: 8 * MiB });
}

/** The error code of a typed error (host, backend or allocator); anything else fails the test. */
function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof HostError || e instanceof BackendError || e instanceof ExecmemError) return e.code;
    throw e;
  }
  return 'no error';
}

/** 256 bytes of NOPs whose `length` says 1, as in the issue. */
function ownLength(): Uint8Array {
  const evil = new Uint8Array(256).fill(0x90);
  Object.defineProperty(evil, 'length', { value: 1 });
  return evil;
}

class LyingLength extends Uint8Array {
  override get length(): number {
    return 1;
  }
}

function subclassLength(): Uint8Array {
  return new LyingLength(256).fill(0x90);
}

function proxyInChain(): Uint8Array {
  const evil = new Uint8Array(256).fill(0x90);
  const proto = new Proxy(Uint8Array.prototype, {
    get: (t, k, r) => (k === 'length' ? 1 : Reflect.get(t, k, r)),
  });
  Object.setPrototypeOf(evil, proto);
  return evil;
}

function proxyOfArray(): Uint8Array {
  const target = new Uint8Array(256).fill(0x90);
  return new Proxy(target, { get: (t, k) => (k === 'length' ? 1 : Reflect.get(t, k)) });
}

const LIARS: [string, () => Uint8Array][] = [
  ['own length property', ownLength],
  ['subclass length getter', subclassLength],
  ['Proxy in the prototype chain', proxyInChain],
  ['Proxy of the array', proxyOfArray],
];

function req(type: MapBlockRequest['type'], sizeBytes: number): MapBlockRequest {
  return { type, range: { start: 0, end: 0 }, fallback: null, sizeBytes, alignBytes: 4096, huge: false };
}

// ------------------------------------------------------------------ child: overflow at a block's end

function child(mode: 'dualmap' | 'mprotect'): void {
  const h = open(mode);
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const data = h.mapBlock(req('module_data', 4096));
  const text = h.mapBlock(req('bpf', 4096));
  const lastByte = (b: { va: number; sizeBytes: number }) => b.va + b.sizeBytes - 1;
  // The next page after each block is free (PROT_NONE): a store there is SIGSEGV.
  say(`write ${codeOf(() => h.write(lastByte(data), ownLength()))}`);
  say(`write-genuine ${codeOf(() => h.write(lastByte(data), new Uint8Array(256)))}`);
  if (mode === 'dualmap') {
    say(`poke ${codeOf(() => h.poke(lastByte(text), subclassLength()))}`);
    say(`poke-genuine ${codeOf(() => h.poke(lastByte(text), new Uint8Array(256)))}`);
  }
  const em = new Execmem(h);
  // The last 64 bytes of a 2 MiB bpf block: the allocation ends where the block does.
  const vas: number[] = [];
  for (let i = 0; i < (2 * MiB) / 64; i++) vas.push(em.allocVa('bpf', 64));
  const last = vas.find((va) => (va + 64) % (2 * MiB) === 0);
  if (last === undefined) throw new Error('no allocation ends at a block end');
  say(`update ${codeOf(() => em.updateVa(last, ownLength()))}`);
  say('survived');
}

if (process.argv[2] === '--host-child') {
  child(process.argv[3] as 'dualmap' | 'mprotect');
} else {
  for (const mode of MODES) {
    describe(`host backend, hostile input (${mode})`, () => {
      test('issue 16 item 2: a spoofed length cannot overwrite the neighbouring allocation', () => {
        const h = open(mode);
        try {
          const em = new Execmem(h);
          for (const [name, make] of LIARS) {
            const mine = em.allocVa('bpf', 64);
            const other = em.allocVa('bpf', 64);
            em.updateVa(other, genConst(77));
            const f = h.fn(other, 'int (void)');
            const before = [h.read(mine, 64), h.read(other, 64)];
            const code = codeOf(() => em.updateVa(mine, make()));
            assert.ok(['EINVAL', 'ERANGE'].includes(code), `${name}: ${code}`);
            assert.deepEqual(h.read(other, 64), before[1], `${name}: the neighbour was overwritten`);
            assert.deepEqual(h.read(mine, 64), before[0], `${name}: a refused update wrote`);
            assert.equal(f(), 77);
            em.freeVa(mine);
            em.freeVa(other);
          }
          em.audit();
        } finally {
          h.close();
        }
      });

      test('the backend takes the byte count from the backing store and refuses a lying length', () => {
        const h = open(mode);
        try {
          const data = h.mapBlock(req('module_data', 8192));
          const text = h.mapBlock(req('bpf', 8192));
          const n = 64;
          for (const [name, make] of LIARS) {
            const before = h.read(data.va, 8192);
            assert.equal(
              codeOf(() => h.write(data.va, make())),
              'EINVAL',
              `write, ${name}`,
            );
            assert.equal(
              codeOf(() => h.fill(data.va, n, make())),
              'EINVAL',
              `fill pattern, ${name}`,
            );
            if (mode === 'dualmap') {
              assert.equal(
                codeOf(() => h.poke(text.va, make())),
                'EINVAL',
                `poke, ${name}`,
              );
              assert.equal(
                codeOf(() => h.pokeSet(text.va, n, make())),
                'EINVAL',
                `pokeSet, ${name}`,
              );
            }
            assert.deepEqual(h.read(data.va, 8192), before, `${name}: memory changed`);
          }
          // Not byte arrays at all.
          for (const bad of [
            new Uint8ClampedArray(4),
            new Uint16Array(4),
            [1, 2, 3],
            'abc',
            null,
            { length: 1 },
          ]) {
            assert.equal(
              codeOf(() => h.write(data.va, bad as never)),
              'EINVAL',
              String(bad),
            );
          }
          // A genuine subclass without a lying length (e.g. Buffer) is fine, and counts its real bytes.
          h.write(data.va, Buffer.from([9, 8, 7]));
          assert.deepEqual([...h.read(data.va, 4)], [9, 8, 7, 0]);
          // A detached buffer has no bytes: nothing is written.
          const ab = new ArrayBuffer(16);
          const detached = new Uint8Array(ab).fill(5);
          structuredClone(ab, { transfer: [ab] });
          h.write(data.va + 100, detached);
          assert.equal(h.read(data.va + 100, 1)[0], 0);
          // A pattern is copied before use: its owner cannot change it half way through.
          h.fill(data.va, 8, Uint8Array.of(1, 2));
          assert.deepEqual([...h.read(data.va, 8)], [1, 2, 1, 2, 1, 2, 1, 2]);
        } finally {
          h.close();
        }
      });

      test('a map request is read once: a getter cannot pass the check and then grow', () => {
        const h = open(mode);
        try {
          let reads = 0;
          const sneaky = {
            ...req('bpf', 4096),
            get sizeBytes() {
              reads++;
              return reads === 1 ? 4096 : 1024 * MiB;
            },
          };
          const b = h.mapBlock(sneaky);
          assert.equal(reads, 1);
          assert.equal(b.sizeBytes, 4096);
          assert.equal(h.report().families[0].mappedBytes, 4096);
        } finally {
          h.close();
        }
      });

      test('at a block end a lying length is a typed error, not SIGSEGV (child process)', () => {
        const env = { ...process.env };
        delete env.NODE_TEST_CONTEXT;
        const r = spawnSync(process.execPath, [SELF, '--host-child', mode], {
          env,
          encoding: 'utf8',
          timeout: 20000,
        });
        const why = `status ${r.status}, signal ${r.signal}, stdout ${r.stdout}, stderr ${r.stderr.slice(0, 2000)}`;
        assert.equal(r.signal, null, why);
        assert.equal(r.status, 0, why);
        assert.match(r.stdout, /^write EINVAL\nwrite-genuine EFAULT\n/, why);
        if (mode === 'dualmap') assert.match(r.stdout, /\npoke EINVAL\npoke-genuine EFAULT\n/, why);
        assert.match(r.stdout, /\nupdate (EINVAL|ERANGE)\nsurvived\n$/, why);
      });

      test('issue 16 item 5: the allocator lock refuses re-entry (EDEADLK) and nothing changes', () => {
        const h = open(mode);
        try {
          h.lock.acquire();
          assert.equal(
            codeOf(() => h.lock.acquire()),
            'EDEADLK',
          );
          // Still held exactly once: one release frees it, a second would be a bug.
          h.lock.release();
          assert.throws(() => h.lock.release());
          h.lock.acquire();
          h.lock.release();
          if (mode === 'mprotect') assert.equal(h.lockState().holder, null);

          // Through the allocator: a length getter that would free the target during the update.
          // Whatever the allocator decides about such an array (refuse it, or take its real bytes
          // without running its code), the target is never freed mid-update and nothing but the
          // array's real bytes is ever written.
          const em = new Execmem(h);
          const p = em.allocVa('bpf', 64);
          em.updateVa(p, genConst(5));
          const before = h.read(p, 64);
          const attempts: string[] = [];
          class FreesOnLook extends Uint8Array {
            override get length(): number {
              attempts.push(codeOf(() => em.freeVa(p)));
              return 200; // and lies
            }
          }
          const evil = new FreesOnLook(6);
          evil.set(genConst(6));
          const code = codeOf(() => em.updateVa(p, evil));
          for (const a of attempts) assert.ok(a === 'EBUSY' || a === 'EDEADLK', `a free from inside: ${a}`);
          assert.equal(em.sizeOfVa(p), 64, 'the allocation is still live');
          const after = h.read(p, 64);
          if (code === 'no error') {
            assert.deepEqual(after.subarray(0, 6), genConst(6), 'the real 6 bytes');
            assert.deepEqual(after.subarray(6), before.subarray(6), 'nothing past them');
            assert.equal(h.fn(p, 'int (void)')(), 6);
          } else {
            assert.equal(code, 'EINVAL');
            assert.deepEqual(after, before, 'refused: nothing written');
            assert.equal(h.fn(p, 'int (void)')(), 5);
          }
          em.freeVa(p);
          em.audit();
        } finally {
          h.close();
        }
      });

      test('issue 16 item 6: after close() every call is ECLOSED; fn refuses code that is not there', () => {
        const h = open(mode);
        const em = new Execmem(h);
        const p = em.allocVa('bpf', 64);
        em.updateVa(p, genConst(3));
        const spare = em.allocVa('bpf', 64);
        const neverAllocated = p + 64 * 1024;
        const d = em.allocVa('module_data', 64);
        const big = em.allocVa('bpf', 3 * MiB);
        const rai = em.allocVa('module_ro_after_init', 100);
        const f = h.fn(p, 'int (void)');
        assert.equal(f(), 3);
        // Freed and never-allocated code: a typed error, not a function that traps when called.
        em.freeVa(spare);
        assert.equal(
          codeOf(() => h.fn(spare, 'int (void)')),
          'EFAULT',
          'freed',
        );
        assert.equal(
          codeOf(() => h.fn(neverAllocated, 'int (void)')),
          'EFAULT',
          'never allocated',
        );
        assert.equal(
          codeOf(() => h.fn(d, 'int (void)')),
          'EFAULT',
          'data',
        );
        assert.equal(
          codeOf(() => h.fn(0x1000, 'int (void)')),
          'EFAULT',
          'outside',
        );
        h.close();
        const calls: [string, () => unknown][] = [
          ['alloc that fits an existing block', () => em.allocVa('bpf', 64)],
          ['alloc of a new block', () => em.allocVa('module_text', 3 * MiB)],
          ['update', () => em.updateVa(p, genConst(4))],
          ['free', () => em.freeVa(p)],
          ['free of data', () => em.freeVa(d)],
          ['free of a large object', () => em.freeVa(big)],
          ['seal', () => em.sealVa(rai)],
          ['read', () => em.readVa(p, 4)],
          ['batch', () => em.batch(() => 0)],
          ['shrink', () => em.shrink({ keepSpare: false })],
          ['fn', () => h.fn(p, 'int (void)')],
          ['a function made before', () => f()],
          ['backend read', () => h.read(p, 4)],
          ['lock', () => h.lock.acquire()],
        ];
        for (const [name, call] of calls) assert.equal(codeOf(call), 'ECLOSED', name);
      });
    });
  }
  describe('host backend, bytes from a growable buffer', () => {
    test('a view of a growable SharedArrayBuffer copies the bytes it was counted with', () => {
      // Another thread may grow the buffer between the count and the copy; grown here in between.
      type Growable = SharedArrayBuffer & { grow(bytes: number): void };
      const Sab = SharedArrayBuffer as unknown as new (
        bytes: number,
        o: { maxByteLength: number },
      ) => Growable;
      const sab = new Sab(8, { maxByteLength: 64 });
      const src = new Uint8Array(sab).fill(7);
      const n = byteCount(src, 'src');
      sab.grow(64);
      new Uint8Array(sab).fill(7);
      assert.equal(src.length, 64, 'the view tracks the new length');
      const dst = new Uint8Array(128);
      copyInto(dst, src, 16, n);
      assert.equal(dst.indexOf(7), 16);
      assert.equal(dst.lastIndexOf(7), 16 + n - 1, 'exactly the counted bytes were copied');
    });
  });
}
