/**
 * `execmem host`: the allocator on REAL memory of this process. JITs a few x86-64 functions
 * (src/host/x86gen.ts) through `Execmem` on the host backend (src/host, engineer H), calls them,
 * checks every answer against the same computation in JavaScript, frees one and shows its bytes
 * became the trap pattern, and prints the /proc/self/maps lines of the mappings involved.
 *
 * Why a demo command: the simulated machine can show costs, but only real memory shows the MMU
 * enforcing W^X. The maps lines are read from the kernel, not described: in dualmap mode the same
 * memfd appears twice (an r-x view and an rw- alias), in mprotect mode one anonymous mapping is
 * r-x between updates. The command fails (exit 1) if any answer is wrong or any listed mapping is
 * writable and executable at once.
 *
 * The host modules load koffi, so they are imported inside the action only.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { HostBackend } from '../../host/index.js';
import { CliFailure, type CliIo, UsageError } from '../io.js';

interface HostOptions {
  mode: string;
}

interface DemoFunction {
  readonly name: string;
  readonly signature: string;
  readonly code: Uint8Array;
  readonly args: readonly unknown[];
  readonly argsText: string;
  readonly expected: number;
}

interface DemoResult {
  readonly name: string;
  readonly signature: string;
  readonly address: string;
  readonly sizeBytes: number;
  readonly args: string;
  readonly result: number;
  readonly expected: number;
}

const MODES = ['auto', 'dualmap', 'mprotect'];

export function register(program: Command, io: CliIo): void {
  program
    .command('host')
    .description(
      'demo: JIT a few functions into real memory of this process, call them, show /proc/self/maps',
    )
    .option(
      '-m, --mode <mode>',
      'auto, dualmap (memfd RX view + RW alias) or mprotect (flip under a lock)',
      'auto',
    )
    .addHelpText(
      'after',
      [
        '',
        'Examples:',
        '  $ execmem host                  # auto: dualmap if the kernel allows an executable memfd mapping',
        '  $ execmem host --mode mprotect  # the fallback mode',
        '  $ execmem host --json | jq .functions      # each function: address, size, result, expected',
        '',
        'Linux x86-64 only (arm64 would need I-cache maintenance after every write; not faked).',
      ].join('\n'),
    )
    .action(async (opts: HostOptions) => {
      await runHost(opts, io);
    });
}

async function demoFunctions(): Promise<DemoFunction[]> {
  const gen = await import('../../host/x86gen.js');
  const values = Int32Array.from({ length: 10 }, (_, i) => (i + 1) * 11);
  const sum = values.reduce((a, b) => a + b, 0);
  const sized = gen.genSized(256, 7);
  return [
    {
      name: 'answer',
      signature: 'int answer(void)',
      code: gen.genConst(42),
      args: [],
      argsText: '()',
      expected: 42,
    },
    {
      name: 'linear',
      signature: 'int linear(int, int)',
      code: gen.genLinear(3, 7),
      args: [5, 4],
      argsText: '(5, 4)',
      expected: 5 * 3 + 4 + 7,
    },
    {
      name: 'diff_times_sum',
      signature: 'int diff_times_sum(int, int)',
      code: gen.genDiffTimesSum(),
      args: [9, 4],
      argsText: '(9, 4)',
      expected: (9 - 4) * (9 + 4),
    },
    {
      name: 'sum',
      signature: 'int sum(const int32_t *, int)',
      code: gen.genSum(),
      args: [values, values.length],
      argsText: `([11, 22, ..., 110], ${values.length})`,
      expected: sum,
    },
    {
      name: 'sized_256',
      signature: 'int sized_256(void)',
      code: sized.code,
      args: [],
      argsText: '()',
      expected: sized.expected,
    },
  ];
}

/** The lines of /proc/self/maps that overlap [start, end) of any range given. */
function mapsLines(ranges: readonly { start: number; end: number }[]): string[] {
  const text = readFileSync('/proc/self/maps', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (!m) continue;
    const lo = Number.parseInt(m[1], 16);
    const hi = Number.parseInt(m[2], 16);
    if (ranges.some((r) => r.start < hi && lo < r.end)) out.push(line);
  }
  return out;
}

async function runHost(opts: HostOptions, io: CliIo): Promise<void> {
  if (!MODES.includes(opts.mode))
    throw new UsageError(`unknown mode '${opts.mode}' (known: ${MODES.join(', ')})`);
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new CliFailure(`the host demo needs Linux on x86-64 (this is ${process.platform}/${process.arch})`);
  }
  const host = await import('../../host/index.js');
  const { Execmem } = await import('../../execmem/execmem.js');
  const functions = await demoFunctions();
  const backend: HostBackend = host.openHost({ mode: opts.mode as 'auto' | 'dualmap' | 'mprotect' });
  try {
    const em = new Execmem(backend);
    const results: DemoResult[] = [];
    const placed: number[] = [];
    for (const f of functions) {
      const va = em.allocVa('bpf', f.code.length);
      em.updateVa(va, f.code);
      placed.push(va);
      const call = backend.fn(va, f.signature);
      const result = call(...f.args) as number;
      results.push({
        name: f.name,
        signature: f.signature,
        address: `0x${va.toString(16)}`,
        sizeBytes: f.code.length,
        args: f.argsText,
        result,
        expected: f.expected,
      });
    }
    const report = backend.report();
    const ranges = report.families.flatMap((fam) => {
      const out = [{ start: Number(fam.viewBase), end: Number(fam.viewBase) + fam.capacityBytes }];
      if (fam.aliasBase !== null)
        out.push({ start: Number(fam.aliasBase), end: Number(fam.aliasBase) + fam.capacityBytes });
      return out;
    });
    const maps = mapsLines(ranges);
    const wxLines = maps.filter((l) => /^\S+ .w.. /.test(l) && /^\S+ ..x. /.test(l));
    // Free the last function: its bytes must read back as the trap pattern (int3 = 0xcc).
    const freedVa = placed[placed.length - 1];
    const freedSize = functions[functions.length - 1].code.length;
    em.freeVa(freedVa);
    const after = em.read(em.toBig(freedVa), Math.min(16, freedSize));
    const trapped = after.every((b) => b === 0xcc);
    const wrong = results.filter((r) => r.result !== r.expected);
    const out = {
      mode: backend.mode,
      modeReason: backend.modeReason,
      functions: results,
      maps,
      wxMappings: wxLines.length,
      freed: { address: `0x${freedVa.toString(16)}`, firstBytes: Array.from(after), trapPattern: trapped },
    };
    if (io.json) io.outJson(out);
    else printHost(out, io);
    if (wrong.length > 0) {
      throw new CliFailure(
        `${wrong.length} JIT functions returned wrong answers: ${wrong.map((w) => w.name).join(', ')}`,
      );
    }
    if (wxLines.length > 0)
      throw new CliFailure(`W^X violated: ${wxLines.length} mappings are writable and executable`);
    if (!trapped) throw new CliFailure('freed code did not read back as the trap pattern');
  } finally {
    backend.close();
  }
}

function printHost(
  out: {
    mode: string;
    modeReason: string;
    functions: readonly DemoResult[];
    maps: readonly string[];
    wxMappings: number;
    freed: { address: string; firstBytes: number[]; trapPattern: boolean };
  },
  io: CliIo,
): void {
  io.out(`host backend: ${out.mode} (${out.modeReason})`);
  io.out('');
  io.out('JIT functions written through execmem update() and called through koffi (real code, real MMU):');
  for (const f of out.functions) {
    const ok = f.result === f.expected ? 'ok' : `WRONG (expected ${f.expected})`;
    io.out(`  ${f.address}  ${String(f.sizeBytes).padStart(4)} B  ${f.name}${f.args} = ${f.result}  ${ok}`);
  }
  io.out('');
  io.out('/proc/self/maps lines of the arenas (never w and x together):');
  for (const line of out.maps) io.out(`  ${line}`);
  io.out('');
  const bytes = out.freed.firstBytes.map((b) => b.toString(16).padStart(2, '0')).join(' ');
  io.out(
    `after free(${out.freed.address}): ${bytes}${out.freed.trapPattern ? '  (int3 trap fill)' : '  NOT TRAP-FILLED'}`,
  );
}
