/**
 * The importers (src/workloads/import) on recorded samples generated here from the documented
 * output formats: scripts/record-execmem.bt's lines (execmem-record/1), `bpftool prog show
 * --json` (tools/bpf/bpftool/prog.c print_prog_json keys) and /proc/modules
 * (kernel/module/procfs.c m_show). No network, no root: a small model of the kernel's calls
 * (KernelRecorder) prints what the script would print, nesting included.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { ExecmemType } from '../src/arch/types.js';
import type { ModuleTable } from '../src/workloads/dataset/table.js';
import {
  detectFormat,
  formatRecordLine,
  ImportError,
  importText,
  PROBE_NAMES,
  parseProcModules,
  parseRecord,
  type RecordEvent,
  splitModuleSize,
} from '../src/workloads/import/index.js';
import type { Trace } from '../src/workloads/trace.js';
import { withTempDir } from './helpers/tempdir.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const opts = { name: 'sample', seed: 1 };

/**
 * What a 6.10+ x86 kernel does, as the script prints it: module_memory_alloc calls
 * execmem_alloc (depth 1 inside it), the BPF JIT's bpf_jit_binary_pack_alloc calls
 * bpf_prog_pack_alloc (depth 1), which takes a new 2 MiB pack with execmem_alloc (depth 2) when
 * none has room; frees print at entry, a pack's own execmem_free inside bpf_prog_pack_free.
 */
class KernelRecorder {
  readonly lines: string[] = ['# execmem-record/1 clock=nsecs', 'Attaching 11 probes...'];
  private ns = 1_000_000n;
  private nextAddr = 0xffffffffc0000000n;
  private readonly freeAddrs: bigint[] = [];

  private line(ev: Omit<RecordEvent, 'line' | 'ns'>): void {
    this.ns += 1000n;
    this.lines.push(formatRecordLine({ ...ev, ns: this.ns }));
  }

  /** Page-granular addresses, reused after a free (as vmalloc reuses freed areas). */
  addr(pages: number): bigint {
    const reuse = this.freeAddrs.findIndex(() => pages === 1);
    if (reuse >= 0) return this.freeAddrs.splice(reuse, 1)[0];
    const a = this.nextAddr;
    this.nextAddr += BigInt(pages * 4096);
    return a;
  }

  release(addr: bigint, pages: number): void {
    if (pages === 1) this.freeAddrs.push(addr);
  }

  /** load_module: one region per non-empty mod_mem_type, [type, bytes] in enum order. */
  moduleLoad(tid: number, name: string, regions: readonly [number, number][]): bigint[] {
    return regions.map(([type, bytes]) => {
      const size = Math.ceil(bytes / 4096) * 4096;
      const addr = this.addr(size / 4096);
      this.line({
        tid,
        probe: 'execmem_alloc',
        type: type === 0 || type === 4 ? 0 : 4,
        sizeBytes: size,
        addr,
        depth: 1,
      });
      this.line({ tid, probe: 'module_memory_alloc', type, sizeBytes: size, addr, mod: name, depth: 0 });
      return addr;
    });
  }

  bpfLoad(tid: number, proglen: number, addr: bigint, newPack: bigint | null): void {
    if (newPack !== null) {
      this.line({
        tid,
        probe: 'execmem_alloc',
        type: 3,
        sizeBytes: 2 * 1024 * 1024,
        addr: newPack,
        depth: 2,
      });
    }
    const size = Math.ceil((proglen + 24) / 64) * 64;
    this.line({ tid, probe: 'bpf_prog_pack_alloc', sizeBytes: size, addr, depth: 1 });
    this.line({ tid, probe: 'bpf_jit_binary_pack_alloc', progBytes: proglen, addr, depth: 0 });
  }

  bpfFree(tid: number, addr: bigint, emptiesPack: bigint | null): void {
    this.line({ tid, probe: 'bpf_prog_pack_free', addr, depth: 0 });
    if (emptiesPack !== null) this.line({ tid, probe: 'execmem_free', addr: emptiesPack, depth: 1 });
  }

  free(tid: number, addr: bigint): void {
    this.line({ tid, probe: 'execmem_free', addr, depth: 0 });
  }

  trampoline(tid: number, size: number, addr: bigint): void {
    this.line({ tid, probe: 'bpf_prog_pack_alloc', sizeBytes: size, addr, depth: 0 });
  }

  alloc(tid: number, type: number, size: number, addr: bigint): void {
    this.line({ tid, probe: 'execmem_alloc', type, sizeBytes: size, addr, depth: 0 });
  }

  text(): string {
    return `${this.lines.join('\n')}\n`;
  }
}

function ops(trace: Trace): Record<string, number> {
  const n: Record<string, number> = {};
  for (const ev of trace.events) n[ev.op] = (n[ev.op] ?? 0) + 1;
  return n;
}

function allocs(trace: Trace) {
  return trace.events.filter((e) => e.op === 'alloc');
}

function expectLineError(text: string, line: number, pattern: RegExp): void {
  assert.throws(
    () => importText(text, 'bpftrace', opts),
    (e: unknown) => e instanceof ImportError && e.where === `line ${line}` && pattern.test(e.message),
    `line ${line} ${pattern}`,
  );
}

describe('bpftrace recording (execmem-record/1)', () => {
  it('parses what formatRecordLine prints, for every probe (round trip)', () => {
    const events: Omit<RecordEvent, 'line'>[] = [
      {
        ns: 5n,
        tid: 1,
        probe: 'execmem_alloc',
        type: 1,
        sizeBytes: 4096,
        addr: 0xffffffffc0000000n,
        depth: 0,
      },
      {
        ns: 6n,
        tid: 1,
        probe: 'execmem_alloc_rw',
        type: 2,
        sizeBytes: 512,
        addr: 0xffffffffc0001000n,
        depth: 0,
      },
      { ns: 7n, tid: 2, probe: 'execmem_free', addr: 0xffffffffc0000000n, depth: 0 },
      {
        ns: 8n,
        tid: 2,
        probe: 'module_memory_alloc',
        type: 6,
        sizeBytes: 8192,
        addr: 0x1000n,
        mod: 'xfs',
        depth: 0,
      },
      { ns: 9n, tid: 2, probe: 'module_memory_alloc', type: 0, sizeBytes: 4096, addr: 0x3000n, depth: 0 },
      { ns: 10n, tid: 3, probe: 'module_memfree', addr: 0x1000n, depth: 1 },
      {
        ns: 2n ** 63n,
        tid: 3,
        probe: 'bpf_prog_pack_alloc',
        sizeBytes: 64,
        addr: 0xffffffffffffffffn,
        depth: 2,
      },
      { ns: 12n, tid: 3, probe: 'bpf_prog_pack_free', addr: 0x40n, depth: 0 },
      { ns: 13n, tid: 3, probe: 'bpf_jit_binary_pack_alloc', progBytes: 77, addr: 0n, depth: 0 },
    ];
    assert.deepEqual(
      new Set(events.map((e) => e.probe)),
      new Set(PROBE_NAMES),
      'the sample covers every probe',
    );
    const parsed = parseRecord(events.map(formatRecordLine).join('\n'));
    assert.deepEqual(
      parsed.map(({ line: _, ...rest }) => rest),
      events,
    );
  });

  it('imports a module load, BPF programs, a trampoline, a kprobe page: types, module number, writes, finalize, seal', () => {
    const k = new KernelRecorder();
    // MOD_TEXT, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_INIT_TEXT
    const [, , , , initText] = k.moduleLoad(100, 'xfs', [
      [0, 10_000],
      [1, 3000],
      [2, 5000],
      [3, 100],
      [4, 2000],
    ]);
    k.bpfLoad(200, 300, 0xffffffffc1000000n, 0xffffffffc1000000n);
    k.bpfLoad(200, 40, 0xffffffffc1000180n, null);
    k.free(7, initText); // do_free_init, from a kworker
    k.alloc(300, 1, 4096, 0xffffffffc0200000n); // alloc_insn_page
    k.trampoline(300, 4096, 0xffffffffc1001000n); // arch_alloc_bpf_trampoline
    const { trace, report } = importText(k.text(), 'bpftrace', opts);
    const a = allocs(trace);
    assert.deepEqual(
      a.map((e) => [e.type, e.sizeBytes, e.module ?? null, e.init ?? false]),
      [
        ['module_text', 12_288, 0, false],
        ['module_data', 4096, 0, false],
        ['module_rodata', 8192, 0, false],
        ['module_ro_after_init', 4096, 0, false],
        ['module_text', 4096, 0, true],
        ['bpf', 384, null, false], // round_up(300 + 8 + 16, 64)
        ['bpf', 64, null, false], // round_up(40 + 24, 64)
        ['kprobes', 4096, null, false],
        ['bpf', 4096, null, false], // a bare bpf_prog_pack_alloc: a trampoline image
      ],
    );
    assert.equal(a[8].caller, 'bpf_trampoline');
    assert.equal(a[5].alignBytes, 64);
    const o = ops(trace);
    assert.equal(o.write, 9);
    assert.equal(o.finalize, 9);
    assert.equal(o.seal, 1);
    assert.equal(o.free, 1);
    // do_init_module seals ro_after_init before the init regions are freed.
    const seal = trace.events.findIndex((e) => e.op === 'seal');
    const free = trace.events.findIndex((e) => e.op === 'free');
    assert.ok(seal >= 0 && seal < free, 'seal before the init free');
    assert.deepEqual(
      report.notes.map((n) => [n.kind, n.count]),
      [['nested', 8]], // five execmem_alloc inside module_memory_alloc, a pack, two bpf_prog_pack_alloc
    );
    assert.equal(report.moduleLoads, 1);
    assert.equal(report.liveAtEnd, 8);
  });

  it('pairs frees by address; an address reused after its free is a new allocation', () => {
    const k = new KernelRecorder();
    const addr = 0xffffffffc0400000n;
    k.alloc(1, 2, 300, addr); // ftrace trampoline
    k.free(1, addr);
    k.alloc(1, 2, 400, addr); // the same address again
    k.free(1, addr);
    k.alloc(1, 2, 500, addr);
    const { trace, report } = importText(k.text(), 'bpftrace', opts);
    const a = allocs(trace);
    assert.deepEqual(
      a.map((e) => e.sizeBytes),
      [300, 400, 500],
    );
    assert.equal(new Set(a.map((e) => e.id)).size, 3);
    const frees = trace.events.filter((e) => e.op === 'free').map((e) => (e as { id: number }).id);
    assert.deepEqual(frees, [a[0].id, a[1].id]);
    assert.equal(report.liveAtEnd, 1);
    assert.equal(report.notes.length, 0);
  });

  it('skips and counts unmatched frees, NULL frees and failed allocations; frees first what an alloc overlaps', () => {
    const k = new KernelRecorder();
    k.free(1, 0xffffffffc0900000n); // allocated before the recording began
    k.free(1, 0n); // execmem_free(NULL)
    k.alloc(1, 1, 4096, 0n); // NULL: failed
    k.alloc(1, 2, 8192, 0xffffffffc0a00000n);
    k.alloc(1, 2, 100, 0xffffffffc0a01000n); // inside the live one: its free was missed
    const { trace, report } = importText(k.text(), 'bpftrace', opts);
    assert.deepEqual(Object.fromEntries(report.notes.map((n) => [n.kind, n.count])), {
      unmatchedFrees: 1,
      failedAllocs: 1,
      implicitFrees: 1,
    });
    assert.deepEqual(
      trace.events.filter((e) => e.op !== 'write' && e.op !== 'finalize').map((e) => e.op),
      ['phase', 'alloc', 'free', 'alloc'],
    );
  });

  it('sorts lines by time (bpftrace prints per-CPU buffers in turn) and keeps a load together', () => {
    const k = new KernelRecorder();
    k.moduleLoad(10, 'ext4', [
      [0, 4096],
      [1, 4096],
    ]);
    k.alloc(20, 2, 200, 0xffffffffc0800000n); // another task, between the two regions below
    k.moduleLoad(10, 'jbd2', [
      [0, 8192],
      [2, 4096],
    ]);
    const lines = k.text().trim().split('\n');
    const shuffled = [...lines.slice(0, 2), ...lines.slice(2).reverse()];
    const { trace, report } = importText(shuffled.join('\n'), 'bpftrace', opts);
    assert.ok(report.notes.some((n) => n.kind === 'outOfOrder' && n.count > 0));
    const a = allocs(trace);
    assert.deepEqual(
      a.map((e) => [e.type, e.module ?? null]),
      [
        ['module_text', 0],
        ['module_data', 0],
        ['ftrace', null],
        ['module_text', 1],
        ['module_rodata', 1],
      ],
    );
  });

  it('refuses a malformed line with a typed error naming it', () => {
    const good = '100 1 execmem_alloc type=1 size=4096 addr=0xffffffffc0000000 depth=0';
    const cases: [string, RegExp][] = [
      ['100 1 execmem_alloc type=1 size=4096 addr=0xffffffffc0000000', /needs 'depth='/],
      ['100 1 execmem_alloc type=1 size=4096 addr=0xffffffffc0000000 depth=0 pid=3', /no key 'pid'/],
      ['100 1 execmem_alloc type=5 size=4096 addr=0x10 depth=0', /type=5 is not an integer in \[0, 4\]/],
      ['100 1 module_memory_alloc type=7 size=4096 addr=0x10 depth=0', /type=7/],
      ['100 1 execmem_alloc type=1 size=4096 addr=ffffffffc0000000 depth=0', /not a 64-bit 0x hex address/],
      ['100 1 execmem_alloc type=1 size=4096 addr=0x1ffffffffc0000000 depth=0', /not a 64-bit/],
      ['1e5 1 execmem_free addr=0x10 depth=0', /not a decimal number of nanoseconds/],
      ['100 1 vmalloc size=4096 addr=0x10 depth=0', /unknown probe 'vmalloc'/],
      ['100 1 execmem_free addr=0x10 addr=0x20 depth=0', /given twice/],
      ['100 1 execmem_free addr 0x10 depth=0', /is not key=value/],
      ['100 execmem_free', /expected "<ns> <tid> <probe>/],
      ['100 1 execmem_alloc type=1 size=0 addr=0x10 depth=0', /of 0 bytes at 0x10/],
      ['100 1 execmem_alloc type=1 size=536870912 addr=0x10 depth=0', /of 536870912 bytes/],
    ];
    for (const [bad, pattern] of cases) expectLineError(`${good}\n\n${bad}\n`, 3, pattern);
    expectLineError('# execmem-record/2\n', 1, /execmem-record\/2/);
    assert.throws(() => importText('# nothing\n', 'bpftrace', opts), /no events/);
  });
});

describe('a random recorded machine (property)', () => {
  it('imports every load and unload, whatever the order of per-CPU output and the address reuse', () => {
    const step = fc.oneof(
      fc.record({ op: fc.constant('bpf' as const), proglen: fc.integer({ min: 1, max: 5000 }) }),
      fc.record({
        op: fc.constant('module' as const),
        pages: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 7, maxLength: 7 }),
      }),
      fc.record({ op: fc.constant('tramp' as const), size: fc.integer({ min: 100, max: 4096 }) }),
      fc.record({ op: fc.constant('unload' as const), pick: fc.nat() }),
    );
    fc.assert(
      fc.property(
        fc.array(step, { minLength: 1, maxLength: 60 }),
        fc.integer({ min: 1, max: 4 }),
        (steps, cpus) => {
          const k = new KernelRecorder();
          const live: { addrs: bigint[]; pages: number; bpf: boolean }[] = [];
          let allocCount = 0;
          let freeCount = 0;
          const bytes: Partial<Record<ExecmemType, number>> = {};
          let tid = 1;
          for (const s of steps) {
            tid++;
            if (s.op === 'bpf') {
              // one pack per program here: the pack's own memory is nested and must not count
              const pages = Math.ceil(Math.ceil((s.proglen + 24) / 64) / 64);
              const addr = k.addr(pages);
              k.bpfLoad(tid, s.proglen, addr, addr);
              live.push({ addrs: [addr], pages, bpf: true });
              allocCount++;
              bytes.bpf = (bytes.bpf ?? 0) + Math.ceil((s.proglen + 24) / 64) * 64;
            } else if (s.op === 'module') {
              const regions = s.pages
                .map((p, t) => [t, p * 4096] as [number, number])
                .filter(([, b]) => b > 0);
              if (regions.length === 0) continue;
              const addrs = k.moduleLoad(tid, `m${tid}`, regions);
              live.push({ addrs, pages: 0, bpf: false });
              allocCount += regions.length;
            } else if (s.op === 'tramp') {
              const addr = k.addr(1);
              k.alloc(tid, 2, s.size, addr);
              live.push({ addrs: [addr], pages: 1, bpf: false });
              allocCount++;
            } else if (live.length > 0) {
              const [victim] = live.splice(s.pick % live.length, 1);
              for (const a of victim.addrs) {
                if (victim.bpf) k.bpfFree(tid, a, a);
                else k.free(tid, a);
                k.release(a, victim.pages);
                freeCount++;
              }
            }
          }
          // bpftrace's output: each CPU's lines in order, the CPUs one after another
          const [head, ...body] = k.lines;
          const perCpu = Array.from({ length: cpus }, (_, c) => body.filter((_, i) => i % cpus === c));
          const text = [head, ...perCpu.flat()].join('\n');
          if (allocCount === 0) return;
          const { trace, report } = importText(text, 'bpftrace', opts);
          const o = ops(trace);
          assert.equal(o.alloc, allocCount);
          assert.equal(o.free ?? 0, freeCount);
          assert.equal(o.finalize, allocCount);
          assert.equal(report.liveAtEnd, allocCount - freeCount);
          assert.equal(report.allocBytesByType.bpf ?? 0, bytes.bpf ?? 0);
          assert.ok(!report.notes.some((n) => n.kind === 'unmatchedFrees' || n.kind === 'implicitFrees'));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('bpftool prog show --json', () => {
  // The keys bpftool's print_prog_json writes, pretty-printed as `bpftool -p` does.
  const sample = JSON.stringify(
    [
      {
        id: 12,
        type: 'cgroup_skb',
        name: 'sd_fw_egress',
        tag: '6deef7357e7b4530',
        gpl_compatible: true,
        loaded_at: 1718000000,
        uid: 0,
        bytes_xlated: 64,
        jited: true,
        bytes_jited: 54,
        bytes_memlock: 4096,
        map_ids: [3],
      },
      {
        id: 3,
        type: 'cgroup_device',
        tag: 'e3dbd137be8d6168',
        gpl_compatible: false,
        loaded_at: 1717999000,
        uid: 0,
        bytes_xlated: 504,
        jited: true,
        bytes_jited: 309,
        bytes_memlock: 4096,
      },
      {
        id: 40,
        type: 'socket_filter',
        name: 'interp',
        tag: '0000000000000000',
        gpl_compatible: true,
        bytes_xlated: 16,
        jited: false,
        bytes_memlock: 4096,
      },
      {
        id: 41,
        type: 'tracing',
        name: 'big',
        tag: '1111111111111111',
        gpl_compatible: true,
        bytes_xlated: 9000,
        jited: true,
        bytes_jited: 70_000,
        bytes_memlock: 12288,
        btf_id: 5,
        pids: [{ pid: 1, comm: 'systemd' }],
      },
    ],
    null,
    2,
  );

  it('makes one JIT image per JITed program, in id (load) order', () => {
    assert.equal(detectFormat(sample), 'bpftool');
    const { trace, report } = importText(sample, 'bpftool', opts);
    assert.deepEqual(
      allocs(trace).map((e) => [e.type, e.sizeBytes, e.alignBytes]),
      [
        ['bpf', 384, 64], // id 3: round_up(309 + 24, 64)
        ['bpf', 128, 64], // id 12: round_up(54 + 24, 64)
        ['bpf', 70_080, 64],
      ],
    );
    assert.deepEqual(
      report.notes.map((n) => [n.kind, n.count]),
      [['interpreted', 1]],
    );
    assert.equal(report.inputRecords, 4);
    const writes = trace.events.filter((e) => e.op === 'write');
    assert.deepEqual(
      writes.map((w) => (w.op === 'write' ? w.functions?.[0]?.[1] : 0)),
      [309, 54, 70_000],
    );
  });

  it('accepts one program object (bpftool prog show id N --json)', () => {
    const one = JSON.stringify({ id: 9, type: 'xdp', tag: 'aa', jited: true, bytes_jited: 100 });
    assert.equal(allocs(importText(one, 'bpftool', opts).trace).length, 1);
  });

  it('names the bad program or line', () => {
    const bad = (docs: unknown, where: string | null, pattern: RegExp) =>
      assert.throws(
        () => importText(typeof docs === 'string' ? docs : JSON.stringify(docs), 'bpftool', opts),
        (e: unknown) => e instanceof ImportError && e.where === where && pattern.test(e.message),
      );
    bad(
      [
        { id: 1, jited: true, bytes_jited: 10 },
        { id: 2, jited: true },
      ],
      'program 2 (id 2)',
      /bytes_jited/,
    );
    bad([{ id: 1, jited: true, bytes_jited: -5 }], 'program 1 (id 1)', /positive integer/);
    bad([{ jited: true, bytes_jited: 5 }], 'program 1', /"id"/);
    bad([{ id: 1, bytes_jited: 5 }], 'program 1 (id 1)', /"jited"/);
    bad([7], 'program 1', /an object/);
    bad(
      [
        { id: 4, jited: true, bytes_jited: 5 },
        { id: 4, jited: true, bytes_jited: 5 },
      ],
      'id 4',
      /twice/,
    );
    bad('[\n{"id": 1,\n"jited": true "x"}\n]', 'line 3', /not JSON/);
    bad([{ id: 1, jited: false }], null, /no JITed program/);
  });
});

describe('/proc/modules', () => {
  // m_show's format: name size refcount deps state address [taints]; newest first.
  const sample = [
    'nvme_tcp 49152 0 - Live 0xffffffffc0a60000 (E)',
    'xfs 2015232 1 - Loading 0x0000000000000000',
    'crc32c_intel 24576 3 xfs,libcrc32c, Live 0xffffffffc0a40000',
    'mystery 4096 0 [permanent], Unloading 0xffffffffc0a00000 (OE)',
  ].join('\n');
  const table: ModuleTable = {
    version: 1,
    kernelRelease: 'test',
    packageName: 'test-table',
    memTypes: ['text', 'data', 'rodata', 'ro_after_init', 'init_text', 'init_data', 'init_rodata'],
    modules: [
      {
        name: 'xfs',
        bytes: [1_200_000, 100_000, 500_000, 5000, 0, 0, 0],
        percpuBytes: 0,
        symbols: 0,
        undefinedSymbols: 0,
        functions: 0,
        relocs: {},
        depends: [],
      },
      {
        name: 'crc32c-intel',
        bytes: [9000, 1000, 4000, 0, 0, 0, 0],
        percpuBytes: 0,
        symbols: 0,
        undefinedSymbols: 0,
        functions: 0,
        relocs: {},
        depends: [],
      },
    ],
  };

  it('parses every column shape m_show prints', () => {
    assert.equal(detectFormat(sample), 'proc-modules');
    assert.deepEqual(
      parseProcModules(sample).map((m) => [m.name, m.sizeBytes, m.line]),
      [
        ['nvme_tcp', 49152, 1],
        ['xfs', 2015232, 2],
        ['crc32c_intel', 24576, 3],
        ['mystery', 4096, 4],
      ],
    );
  });

  it('loads bottom-up, one module number per module, split in pages as the table lays the module out', () => {
    const { trace, report } = importText(sample, 'proc-modules', { ...opts, table });
    const a = allocs(trace);
    const byModule = new Map<number, typeof a>();
    for (const e of a) byModule.set(e.module as number, [...(byModule.get(e.module as number) ?? []), e]);
    const sizes = [...byModule.values()].map((rs) => rs.reduce((s, e) => s + e.sizeBytes, 0));
    assert.deepEqual(sizes, [4096, 24576, 2015232, 49152], 'file order reversed, sizes kept');
    // crc32c_intel: table pages 3:1:1 (9000, 1000, 4000 bytes) over 6 pages: 3.6, 1.2, 1.2
    assert.deepEqual(
      (byModule.get(1) ?? []).map((e) => [e.type, e.sizeBytes]),
      [
        ['module_text', 16384],
        ['module_data', 4096],
        ['module_rodata', 4096],
      ],
    );
    for (const e of a) assert.equal(e.sizeBytes % 4096, 0);
    const withRoAfterInit = a.filter((e) => e.type === 'module_ro_after_init');
    assert.ok(
      withRoAfterInit.some((e) => e.module === 2),
      'xfs has ro_after_init',
    );
    assert.equal(ops(trace).seal, withRoAfterInit.length, 'every ro_after_init sealed');
    assert.deepEqual(
      report.notes.map((n) => [n.kind, n.count]),
      [
        ['splitFromTable', 2],
        ['splitByShare', 2],
      ],
    );
  });

  it('works with the shipped Debian table by default', () => {
    const { trace } = importText(sample, 'proc-modules', opts);
    assert.equal(
      allocs(trace).reduce((s, e) => s + e.sizeBytes, 0),
      4096 + 24576 + 2015232 + 49152,
    );
  });

  it('splitModuleSize: whole pages adding up to the size, each present type at least a page', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.integer({ min: 0, max: 4095 }),
        fc.array(fc.nat({ max: 1_000_000 }), { minLength: 4, maxLength: 4 }),
        (pages, rest, weights) => {
          const total = pages * 4096 + rest;
          const split = splitModuleSize(total, weights);
          assert.equal(
            split.reduce((s, x) => s + x, 0),
            total,
          );
          split.forEach((x, i) => {
            assert.equal((i === 0 ? x - rest : x) % 4096, 0);
            if (weights[i] === 0 && weights.some((w) => w > 0)) assert.equal(i === 0 ? x - rest : x, 0);
          });
          const present = weights.filter((w) => w > 0).length;
          if (pages >= present) {
            weights.forEach((w, i) => {
              if (w > 0) assert.ok(split[i] >= 4096, `type ${i} has a page`);
            });
          }
        },
      ),
    );
  });

  it('names a malformed line', () => {
    const cases: [string, RegExp][] = [
      ['xfs 2015232 1 - Live', /expected "name size/],
      ['xfs big 1 - Live 0x0', /size 'big'/],
      ['xfs 4096 1 - Dead 0x0', /state 'Dead'/],
      ['xfs 4096 1 - Live ffff', /address 'ffff'/],
      ['xfs 4096 1 - Live 0x0 OE', /taints 'OE'/],
      ['xfs 4096 x - Live 0x0', /refcount 'x'/],
    ];
    for (const [bad, pattern] of cases) {
      assert.throws(
        () => importText(`nvme 4096 0 - Live 0x0\n${bad}\n`, 'proc-modules', { ...opts, table }),
        (e: unknown) => e instanceof ImportError && e.where === 'line 2' && pattern.test(e.message),
        bad,
      );
    }
    assert.throws(
      () => importText('xfs 4096 0 - Live 0x0\nxfs 4096 0 - Live 0x0\n', 'proc-modules', { ...opts, table }),
      /twice/,
    );
  });
});

describe('scripts/record-execmem.bt and .sh', () => {
  const bt = readFileSync(join(ROOT, 'scripts/record-execmem.bt'), 'utf8');

  it('every line the script prints is one the importer reads', () => {
    const formats = [...bt.matchAll(/printf\("(%lu %d [a-z_]+ [^"]*)\\n"/g)].map((m) => m[1]);
    const probes = new Set(formats.map((f) => f.split(' ')[2]));
    assert.deepEqual(probes, new Set(PROBE_NAMES), 'one printf per probe the importer knows');
    for (const f of formats) {
      const line = f
        .replace('%lu', '123456789')
        .replace('%d', '42')
        .replaceAll('0x%lx', '0xffffffffc0001000')
        .replaceAll('type=%lu', 'type=1')
        .replaceAll('=%lu', '=4096')
        .replaceAll('=%d', '=0')
        .replaceAll('=%s', '=xfs');
      assert.doesNotMatch(line, /%/, f);
      const [ev] = parseRecord(line);
      assert.equal(ev.probe, f.split(' ')[2]);
    }
  });

  it('the wrapper keeps exactly the blocks whose function /proc/kallsyms has', () => {
    withTempDir('kallsyms-', (dir) => {
      const ks = join(dir, 'kallsyms');
      writeFileSync(
        ks,
        [
          'ffffffff814e1990 T bpf_prog_pack_alloc',
          'ffffffff814e37e0 T bpf_prog_pack_free',
          'ffffffff814e39e0 T bpf_jit_binary_pack_alloc',
          '0000000000000000 t module_memory_alloc.isra.0',
          'ffffffff816d0980 T execmem_alloc',
          'ffffffff816d0981 D execmem_free',
        ].join('\n'),
      );
      const r = spawnSync('sh', [join(ROOT, 'scripts/record-execmem.sh'), '--print'], {
        encoding: 'utf8',
        env: { ...process.env, KALLSYMS: ks },
      });
      assert.equal(r.status, 0, r.stderr);
      const probes = [...r.stdout.matchAll(/^(kprobe|kretprobe):(\w+)$/gm)].map((m) => m[2]);
      assert.deepEqual(
        [...new Set(probes)],
        ['execmem_alloc', 'bpf_jit_binary_pack_alloc', 'bpf_prog_pack_alloc', 'bpf_prog_pack_free'],
      );
      assert.match(r.stdout, /^BEGIN$/m);
      assert.match(
        r.stderr,
        /not in this kernel: execmem_alloc_rw execmem_free module_memory_alloc module_memfree/,
      );
      const none = spawnSync('sh', [join(ROOT, 'scripts/record-execmem.sh'), '--print'], {
        encoding: 'utf8',
        env: { ...process.env, KALLSYMS: '/dev/null' },
      });
      assert.equal(none.status, 1);
      assert.match(none.stderr, /none of the probed functions/);
    });
  });
});
