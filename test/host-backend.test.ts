/**
 * The host backend on real memory, driven directly (no allocator): the kernel is the oracle.
 * Code is generated with src/host/x86gen.ts, written through the backend and run; permissions
 * are read back from /proc/self/maps; huge pages from /proc/self/smaps.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { BackendBlock, MapBlockRequest } from '../src/execmem/backend.js';
import { BackendError } from '../src/execmem/backend.js';
import {
  genConst,
  genDiffTimesSum,
  genLinear,
  genSized,
  genSum,
  type HostBackend,
  HostError,
  openHost,
  readMaps,
  X86Asm,
} from '../src/host/index.js';
import { hugeBytesIn } from '../src/host/procmaps.js';

const MiB = 1024 * 1024;
const TRAP = Uint8Array.of(0xcc);
const MODES = ['dualmap', 'mprotect'] as const;

function req(type: MapBlockRequest['type'], sizeBytes: number, huge = false): MapBlockRequest {
  return {
    type,
    range: { start: 0, end: 0 },
    fallback: null,
    sizeBytes,
    alignBytes: huge ? 2 * MiB : 4096,
    huge,
  };
}

function open(mode: 'dualmap' | 'mprotect'): HostBackend {
  return openHost({ mode, textReserveBytes: 32 * MiB, dataReserveBytes: 8 * MiB });
}

/** A text block, trap-filled and published RX, as the allocator prepares one. */
function textBlock(h: HostBackend, sizeBytes = 64 * 1024): BackendBlock {
  const b = h.mapBlock(req('bpf', sizeBytes));
  h.fill(b.va, b.sizeBytes, TRAP);
  h.protect(b, b.va, b.sizeBytes, 'rox');
  return b;
}

/** Write code at va the way the allocator's helper would in this mode. */
function install(h: HostBackend, b: BackendBlock, va: number, code: Uint8Array): void {
  if (h.hasAliasWrite) {
    h.poke(va, code);
    return;
  }
  h.lock.acquire();
  try {
    h.protect(b, b.va, b.sizeBytes, 'rw');
    h.write(va, code);
    h.protect(b, b.va, b.sizeBytes, 'rox');
  } finally {
    h.lock.release();
  }
}

/** Every maps entry overlapping the backend's reservations. */
function ourMappings(h: HostBackend) {
  const ranges = h.report().families.flatMap((f) => {
    const view = Number.parseInt(f.viewBase, 16);
    const r = [{ start: view, end: view + f.capacityBytes }];
    if (f.aliasBase !== null) {
      const alias = Number.parseInt(f.aliasBase, 16);
      r.push({ start: alias, end: alias + f.capacityBytes });
    }
    return r;
  });
  return readMaps().filter((m) => ranges.some((r) => m.start < r.end && m.end > r.start));
}

/** Kernel permissions of the page at va, from /proc/self/maps. */
function permsAt(va: number): string {
  const m = readMaps().find((e) => e.start <= va && va < e.end);
  assert.ok(m, `no mapping at 0x${va.toString(16)}`);
  return m.perms;
}

function snapshot(h: HostBackend): string {
  return JSON.stringify({ c: h.counters(), f: h.report().families });
}

describe('host backend: open and probe', () => {
  test('auto mode probes dualmap for real and says why', () => {
    const h = openHost({ textReserveBytes: 4 * MiB, dataReserveBytes: 2 * MiB });
    try {
      const r = h.report();
      assert.equal(r.requestedMode, 'auto');
      assert.ok(r.probes.dualmap, 'auto must run the dualmap probe');
      assert.equal(h.mode, r.probes.dualmap.ok ? 'dualmap' : 'mprotect');
      assert.match(h.modeReason, /^auto: /);
      assert.equal(h.hasAliasWrite, h.mode === 'dualmap');
      assert.equal(h.kind, 'host');
      assert.equal(h.arch.name, 'x86_64');
      assert.deepEqual([...h.arch.trapPattern], [0xcc]);
    } finally {
      h.close();
    }
  });

  for (const fault of ['memfd_create', 'mmap_exec'] as const) {
    test(`a forced ${fault} probe failure falls back to mprotect, and explicit dualmap refuses`, () => {
      const h = openHost({
        mode: 'auto',
        probeFault: fault,
        textReserveBytes: 4 * MiB,
        dataReserveBytes: 2 * MiB,
      });
      try {
        assert.equal(h.mode, 'mprotect');
        assert.equal(h.hasAliasWrite, false);
        assert.match(h.modeReason, /forced by probe fault/);
        assert.match(h.modeReason, /falling back to mprotect/);
        assert.equal(h.report().probes.anonExec?.ok, true);
        // The fallback really runs code.
        const b = textBlock(h);
        install(h, b, b.va, genConst(7));
        assert.equal(h.fn(b.va, 'int (void)')(), 7);
      } finally {
        h.close();
      }
      assert.throws(
        () => openHost({ mode: 'dualmap', probeFault: fault }),
        (e: unknown) => e instanceof BackendError && e.code === 'ENOTSUP' && /forced/.test(e.message),
      );
    });
  }

  test('a kernel that rejects MFD_EXEC (pre-6.3, forced) gets the retry without it', () => {
    const h = openHost({
      mode: 'dualmap',
      probeFault: 'mfd_exec',
      textReserveBytes: 4 * MiB,
      dataReserveBytes: 2 * MiB,
    });
    try {
      assert.equal(h.mode, 'dualmap');
      assert.equal(h.report().memfdFlags, 'MFD_CLOEXEC');
      const b = textBlock(h);
      install(h, b, b.va, genConst(11));
      assert.equal(h.fn(b.va, 'int (void)')(), 11);
    } finally {
      h.close();
    }
    const normal = openHost({ mode: 'dualmap', textReserveBytes: 4 * MiB, dataReserveBytes: 2 * MiB });
    try {
      // This kernel (6.3+) takes MFD_EXEC; older ones would report the retry here too.
      assert.match(normal.report().memfdFlags ?? '', /^MFD_CLOEXEC/);
    } finally {
      normal.close();
    }
  });

  test('bad options are typed errors', () => {
    const bad = [
      { mode: 'rwx' as never },
      { textReserveBytes: 3 * MiB },
      { dataReserveBytes: 0 },
      { textReserveBytes: 1.5 },
    ];
    for (const o of bad) {
      assert.throws(
        () => openHost(o),
        (e: unknown) => e instanceof HostError && e.code === 'EINVAL',
      );
    }
  });
});

for (const mode of MODES) {
  describe(`host backend (${mode})`, () => {
    test('generated functions written through the backend return the right answers', () => {
      const h = open(mode);
      try {
        const b = textBlock(h);
        const cases: [Uint8Array, string, unknown[], number][] = [
          [genConst(-5), 'int (void)', [], -5],
          [genLinear(3, 7), 'int (int, int)', [5, 2], 24],
          [genLinear(-2, 1000), 'int (int, int)', [10, 1], 981],
          [genDiffTimesSum(), 'int (int, int)', [9, 4], 65],
          [genSum(), 'int (const int32_t *, int)', [Int32Array.of(1, 2, 3, 4, 100, -10), 6], 100],
          [genSum(), 'int (const int32_t *, int)', [Int32Array.of(5), 0], 0],
        ];
        let at = b.va;
        for (const [code, sig, args, want] of cases) {
          install(h, b, at, code);
          assert.equal(h.fn(at, sig)(...args), want, `${sig} at +${at - b.va}`);
          at += 256;
        }
        const sized = genSized(4096, 11);
        assert.equal(sized.code.length, 4096);
        install(h, b, b.va + 8192, sized.code);
        assert.equal(h.fn(BigInt(b.va + 8192), 'int (void)')(), sized.expected);
        assert.deepEqual(h.read(b.va + 8192, 4096), sized.code);
        // Untouched space still holds the trap fill.
        assert.ok(h.read(b.va + 4096, 4096).every((x) => x === 0xcc));
      } finally {
        h.close();
      }
    });

    test('the call stub passes integer, pointer and floating arguments in order; others are decoded', () => {
      const h = open(mode);
      try {
        const stub = h.share().trampoline;
        assert.notEqual(stub, 0, 'the stub page exists');
        assert.equal(permsAt(stub).slice(0, 3), 'r-x', 'the stub is RX, never writable');
        const b = textBlock(h);
        // a*10000 + b*1000 + c*100 + d*10 + e (Intel SDM vol. 2: 69 /r id and 6B /r ib IMUL,
        // 01 /r ADD, REX.R 44 for r8d/r9d): a wrong argument order gives a wrong number.
        const five = [
          0x69, 0xc7, 0x10, 0x27, 0, 0, 0x69, 0xf6, 0xe8, 0x03, 0, 0, 0x01, 0xf0, 0x6b, 0xd2, 0x64,
        ];
        five.push(0x01, 0xd0, 0x6b, 0xc9, 0x0a, 0x01, 0xc8, 0x44, 0x01, 0xc0);
        install(h, b, b.va, Uint8Array.from([...five, 0xc3]));
        assert.equal(h.fn(b.va, 'int (int, int, int, int, int)')(1, 2, 3, 4, 5), 12345);
        // Six integer arguments cannot pass through the stub (its seventh would go on the stack):
        // the same body times ten plus r9d (6B C0 0A; 44 01 C8), called through koffi.decode.
        install(h, b, b.va + 64, Uint8Array.from([...five, 0x6b, 0xc0, 0x0a, 0x44, 0x01, 0xc8, 0xc3]));
        assert.equal(h.fn(b.va + 64, 'int (int, int, int, int, int, int)')(1, 2, 3, 4, 5, 6), 123456);
        // x * 2 + n: cvtsi2sd xmm1, edi (F2 0F 2A /r); addsd xmm0, xmm0; addsd xmm0, xmm1 (F2 0F 58 /r).
        const dbl = [0xf2, 0x0f, 0x2a, 0xcf, 0xf2, 0x0f, 0x58, 0xc0, 0xf2, 0x0f, 0x58, 0xc1, 0xc3];
        install(h, b, b.va + 128, Uint8Array.from(dbl));
        assert.equal(h.fn(b.va + 128, 'double (double, int)')(1.25, 3), 5.5);
        // A pointer argument (koffi copies the array in) and a second address with one signature.
        install(h, b, b.va + 192, genSum());
        install(h, b, b.va + 256, genSum());
        const sum = 'int (const int32_t *, int)';
        assert.equal(h.fn(b.va + 192, sum)(Int32Array.of(4, 5, 6), 3), 15);
        assert.equal(h.fn(b.va + 256, sum)(Int32Array.of(7, 8), 2), 15);
      } finally {
        h.close();
      }
    });

    test('/proc/self/maps: never w and x together; view not writable, alias not executable', () => {
      const h = open(mode);
      try {
        const text = textBlock(h);
        install(h, text, text.va, genConst(1));
        const data = h.mapBlock(req('module_data', 16 * 1024));
        const ro = h.mapBlock(req('module_ro_after_init', 8192));
        h.protect(ro, ro.va, 8192, 'ro');
        const ours = ourMappings(h);
        assert.ok(ours.length > 0);
        for (const m of ours)
          assert.ok(!(m.perms[1] === 'w' && m.perms[2] === 'x'), `W+X mapping ${JSON.stringify(m)}`);
        assert.equal(permsAt(text.va).slice(0, 3), 'r-x');
        assert.equal(permsAt(data.va).slice(0, 3), 'rw-');
        assert.equal(permsAt(ro.va).slice(0, 3), 'r--');
        if (mode === 'dualmap') {
          const f = h.report().families;
          const textAlias =
            text.va - Number.parseInt(f[0].viewBase, 16) + Number.parseInt(f[0].aliasBase!, 16);
          const roAlias = ro.va - Number.parseInt(f[1].viewBase, 16) + Number.parseInt(f[1].aliasBase!, 16);
          assert.equal(permsAt(textAlias), 'rw-s', 'text alias is RW, shared, not executable');
          assert.equal(permsAt(text.va), 'r-xs');
          assert.equal(permsAt(roAlias), 'r--s', 'a sealed ro_after_init page has no writable alias');
          assert.ok(
            ours.some((m) => /memfd:execmem-text/.test(m.name)),
            'memfd is named',
          );
          assert.equal(h.report().memfdFlags?.startsWith('MFD_CLOEXEC'), true);
        } else {
          assert.equal(permsAt(text.va), 'r-xp');
        }
        // The backend's own page table agrees with the kernel's.
        for (const [va, want] of [
          [text.va, 'rox'],
          [data.va, 'rw'],
          [ro.va, 'ro'],
        ] as const) {
          assert.equal(h.protAt(va), want);
        }
      } finally {
        h.close();
      }
    });

    test('unmapBlock returns the range to PROT_NONE and it can be mapped again', () => {
      const h = open(mode);
      try {
        const b = textBlock(h, 2 * MiB);
        const va = b.va;
        h.unmapBlock(b);
        assert.equal(permsAt(va).slice(0, 3), '---');
        assert.equal(h.protAt(va), null);
        assert.throws(
          () => h.read(va, 1),
          (e: unknown) => e instanceof HostError && e.code === 'EFAULT',
        );
        const again = h.mapBlock(req('bpf', 2 * MiB));
        assert.equal(again.va, va, 'first fit reuses the freed range');
        // Fresh pages: the old trap fill is gone (memory was released, not just re-protected).
        assert.ok(h.read(va, 4096).every((x) => x === 0));
        const c = h.counters();
        assert.equal(c.blocksMapped, 2);
        assert.equal(c.blocksUnmapped, 1);
      } finally {
        h.close();
      }
    });

    test('huge blocks: largePages is what smaps shows, never assumed', () => {
      const h = open(mode);
      try {
        const use = h.report().thpForBlocks;
        const b = h.mapBlock(req('bpf', 2 * MiB, true));
        const field = mode === 'dualmap' ? 'ShmemPmdMapped' : 'AnonHugePages';
        const measured = hugeBytesIn(b.va, b.va + b.sizeBytes, field);
        assert.equal(
          b.largePages,
          measured >= 2 * MiB,
          `largePages ${b.largePages}, smaps ${field} ${measured}`,
        );
        if (!use.usable) {
          assert.equal(b.largePages, false);
          assert.equal(h.counters().hugeFallbacks, 1);
        }
        assert.equal(h.counters().hugeFallbacks, b.largePages ? 0 : 1);
        // A whole-block flip (as the allocator does) keeps the 2 MiB page.
        h.fill(b.va, b.sizeBytes, TRAP);
        h.protect(b, b.va, b.sizeBytes, 'rox');
        if (b.largePages) assert.equal(hugeBytesIn(b.va, b.va + b.sizeBytes, field), 2 * MiB);
      } finally {
        h.close();
      }
    });

    test('bad requests are typed errors that change nothing', () => {
      const h = open(mode);
      try {
        const b = textBlock(h);
        const data = h.mapBlock(req('module_data', 8192));
        const before = snapshot(h);
        const einval = (e: unknown) => e instanceof HostError && e.code === 'EINVAL';
        const efault = (e: unknown) => e instanceof HostError && e.code === 'EFAULT';
        assert.throws(() => h.mapBlock(req('bpf', 0)), einval);
        assert.throws(() => h.mapBlock(req('bpf', 100)), einval);
        assert.throws(() => h.mapBlock(req('bpf', -4096)), einval);
        assert.throws(() => h.mapBlock(req('nope' as never, 4096)), einval);
        assert.throws(() => h.mapBlock({ ...req('bpf', 4096), alignBytes: 3 }), einval);
        assert.throws(() => h.mapBlock(req('bpf', 4096, true)), einval);
        assert.throws(() => h.protect(b, b.va, b.sizeBytes, 'rwx'), einval);
        assert.throws(() => h.protect(b, b.va + 1, 4096, 'rw'), einval);
        assert.throws(() => h.protect(b, b.va, b.sizeBytes + 4096, 'rw'), einval);
        assert.throws(
          () => h.protect({ va: b.va, sizeBytes: b.sizeBytes, largePages: false }, b.va, 4096, 'rw'),
          einval,
        );
        assert.throws(() => h.unmapBlock({ va: 12345, sizeBytes: 4096, largePages: false }), einval);
        // Stores the MMU would kill the process for are refused first.
        assert.throws(() => h.write(b.va, Uint8Array.of(1)), efault, 'write to an RX page');
        assert.throws(() => h.fill(b.va, 16, TRAP), efault);
        assert.throws(() => h.write(data.va + 8190, Uint8Array.of(1, 2, 3)), efault, 'write past the block');
        assert.throws(() => h.write(0x1000, Uint8Array.of(1)), efault, 'write outside the reservations');
        assert.throws(() => h.read(b.va + b.sizeBytes, 1), efault);
        assert.throws(() => h.read(b.va, 0), einval);
        assert.throws(() => h.fill(data.va, 8, new Uint8Array(0)), einval);
        assert.throws(() => h.fn(data.va, 'int (void)'), efault, 'data is not executable');
        assert.throws(() => h.fn(b.va, 'int (((('), einval);
        if (mode === 'mprotect') {
          const enotsup = (e: unknown) => e instanceof BackendError && e.code === 'ENOTSUP';
          assert.throws(() => h.poke(b.va, Uint8Array.of(0x90)), enotsup);
          assert.throws(() => h.pokeSet(b.va, 4, TRAP), enotsup);
        } else {
          assert.throws(() => h.poke(data.va + 8192, Uint8Array.of(1)), efault);
        }
        assert.equal(snapshot(h), before);
        assert.ok(
          h.read(b.va, 64).every((x) => x === 0xcc),
          'memory unchanged',
        );
      } finally {
        h.close();
      }
    });

    test('an exhausted reservation is ENOSPC with nothing changed', () => {
      const h = openHost({ mode, textReserveBytes: 4 * MiB, dataReserveBytes: 2 * MiB });
      try {
        h.mapBlock(req('kprobes', 2 * MiB, true));
        h.mapBlock(req('ftrace', 2 * MiB, true));
        const before = snapshot(h);
        assert.throws(
          () => h.mapBlock(req('module_text', 4096)),
          (e: unknown) => e instanceof BackendError && e.code === 'ENOSPC',
        );
        assert.equal(snapshot(h), before);
        // The data family is a separate reservation and still has room.
        assert.equal(h.mapBlock(req('module_rodata', 2 * MiB)).sizeBytes, 2 * MiB);
      } finally {
        h.close();
      }
    });

    test('a closed backend refuses everything with ECLOSED, including functions made before', () => {
      const h = open(mode);
      const b = textBlock(h);
      install(h, b, b.va, genConst(3));
      const f = h.fn(b.va, 'int (void)');
      assert.equal(f(), 3);
      h.close();
      h.close();
      assert.equal(h.isClosed, true);
      const eclosed = (e: unknown) => e instanceof BackendError && e.code === 'ECLOSED';
      assert.throws(() => f(), eclosed);
      assert.throws(() => h.mapBlock(req('bpf', 4096)), eclosed);
      assert.throws(() => h.unmapBlock(b), eclosed);
      assert.throws(() => h.write(b.va, Uint8Array.of(1)), eclosed);
      assert.throws(() => h.fill(b.va, 1, TRAP), eclosed);
      assert.throws(() => h.protect(b, b.va, 4096, 'rw'), eclosed);
      assert.throws(() => h.poke(b.va, Uint8Array.of(1)), eclosed);
      assert.throws(() => h.pokeSet(b.va, 1, TRAP), eclosed);
      assert.throws(() => h.read(b.va, 1), eclosed);
      assert.throws(() => h.fn(b.va, 'int (void)'), eclosed);
      assert.throws(() => h.share(), eclosed);
      assert.ok(
        !readMaps().some((m) => m.start <= b.va && b.va < m.end && m.perms.includes('x')),
        'unmapped',
      );
    });

    test('calling code on a page being rewritten is refused, not a crash', () => {
      const h = open(mode);
      try {
        const b = textBlock(h);
        install(h, b, b.va, genConst(9));
        const f = h.fn(b.va, 'int (void)');
        h.lock.acquire();
        try {
          h.protect(b, b.va, b.sizeBytes, 'rw');
          assert.throws(f, (e: unknown) => e instanceof HostError && e.code === 'EFAULT');
          h.protect(b, b.va, b.sizeBytes, 'rox');
          assert.equal(f(), 9, 'the lock holder may call code that is executable');
        } finally {
          h.lock.release();
        }
        assert.equal(f(), 9);
      } finally {
        h.close();
      }
    });
  });
}

describe('x86gen', () => {
  test('encodings match the Intel SDM opcode tables', () => {
    // imul eax, edi, 3 ; add eax, esi ; add eax, 7 ; ret
    assert.deepEqual([...genLinear(3, 7)], [0x69, 0xc7, 3, 0, 0, 0, 0x03, 0xc6, 0x05, 7, 0, 0, 0, 0xc3]);
    // mov eax, -5 ; ret
    assert.deepEqual([...genConst(-5)], [0xb8, 0xfb, 0xff, 0xff, 0xff, 0xc3]);
    // xor eax,eax; test esi,esi; jle +11; xor ecx,ecx; add eax,[rdi+rcx*4]; inc ecx; cmp ecx,esi; jl -9; ret
    assert.deepEqual(
      [...genSum()],
      [
        0x33, 0xc0, 0x85, 0xf6, 0x7e, 0x0b, 0x33, 0xc9, 0x03, 0x04, 0x8f, 0xff, 0xc1, 0x3b, 0xce, 0x7c, 0xf7,
        0xc3,
      ],
    );
    assert.throws(() => new X86Asm().mov(4 as never, 0));
    assert.throws(() => new X86Asm().movImm(0, 2 ** 33));
    const a = new X86Asm();
    const far = a.label();
    a.jmp(far).padTo(200);
    assert.throws(() => a.bind(far), /out of range/);
  });

  test('genSized produces exactly the asked size', () => {
    for (const n of [6, 7, 64, 256, 4096]) assert.equal(genSized(n, 1).code.length, n);
  });
});
