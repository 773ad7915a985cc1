/**
 * `bpf-real`: a machine's worth of real BPF programs, loaded and unloaded in the order a Debian
 * machine does it, with every image size computed by our JIT (src/consumers/bpf).
 *
 * Why these programs: the BPF programs most machines run are not hand-written eBPF but classic
 * BPF the kernel converts: the seccomp filters systemd installs for every sandboxed service (one
 * program per directive and per architecture, systemd.ts), and the socket filters libpcap
 * attaches for tcpdump. data/bpf-real.json (scripts/gen-bpf-real.mjs) holds the real classic
 * programs (libseccomp's and libpcap's output for this machine's 9 sandboxed systemd 252 units
 * and 6 tcpdump sessions) and, for the XDP programs Debian's libxdp1 ships, the per-function image
 * lengths our JIT computed from the objects (one image per function, jit_subprogs()). Sizes: the
 * converged x86 JIT length of each program, then bpf_jit_binary_pack_alloc()'s request
 * (packImageBytes: + header + 16 B, rounded to 64 B).
 *
 * The order (ASSUMED, a plausible day of one machine, not a measured trace):
 * - boot: long-running services start (journald, networkd, timesyncd, logind), each loading its
 *   filters in the order exec_child() applies them; an XDP dispatcher with one filter program on
 *   each of two interfaces (xdp-loader: the dispatcher and its enabled slots, the xdp-filter
 *   program, each function its own image);
 * - day: bus-activated services (hostnamed, localed, timedated) start on demand and exit when idle
 *   (their filters are freed with the last task using them), fstrim runs and exits, a tcpdump
 *   session now and then (libpcap first attaches a one-instruction `ret #0` filter to drain the
 *   socket, then the real one: set_kernel_filter() in pcap-linux.c; both freed when it ends), and
 *   once a service restarts (new filters loaded before the old process's are freed).
 * Each load is alloc + one write + finalize exactly as bpf-churn's (emitBpfLoad), so every design
 * sees the same images.
 */
import { readFileSync } from 'node:fs';
import { assert } from '../base/assert.js';
import { Rng } from '../base/rng.js';
import { parseClassicText } from '../consumers/bpf/classic.js';
import { packImageBytes } from '../consumers/bpf/image.js';
import type { ClassicKind } from '../consumers/bpf/program.js';
import { jitClassic } from '../consumers/bpf/program.js';
import { emitBpfLoad } from './bpf.js';
import { LiveSet, scaled, scaleOf, seedOf, TraceBuilder, type WorkloadOptions } from './builder.js';
import { bpfJitImage } from './sizes.js';
import type { Trace } from './trace.js';

export const BPF_REAL_DATA = new URL('../../../data/bpf-real.json', import.meta.url);

interface RealData {
  readonly format: 'execmem-bpf-real/1';
  readonly seccomp: readonly { readonly service: string; readonly label: string; readonly program: string }[];
  readonly tcpdump: readonly { readonly expr: string; readonly program: string }[];
  readonly xdp: readonly {
    readonly object: string;
    readonly program: string;
    readonly functions: readonly {
      readonly name: string;
      readonly insns: number;
      readonly proglenBytes: number;
    }[];
  }[];
}

/** One program as the workload loads it: its JIT length and where it comes from. */
export interface RealProgram {
  readonly kind: 'seccomp' | 'socket' | 'xdp';
  readonly source: string;
  readonly proglenBytes: number;
  readonly imageBytes: number;
}

export interface BpfRealCorpus {
  /** Per service, its filters in load order. */
  readonly services: ReadonlyMap<string, readonly RealProgram[]>;
  readonly tcpdump: readonly RealProgram[];
  /** Per XDP object program: its functions (one image each). */
  readonly xdp: ReadonlyMap<string, readonly RealProgram[]>;
}

let cached: BpfRealCorpus | null = null;

/** Parse data/bpf-real.json and JIT every classic program (cached: the JIT is deterministic). */
export function bpfRealCorpus(): BpfRealCorpus {
  if (cached) return cached;
  const d = JSON.parse(readFileSync(BPF_REAL_DATA, 'utf8')) as RealData;
  if (d.format !== 'execmem-bpf-real/1') throw new Error(`bpf-real data: unknown format ${String(d.format)}`);
  const classic = (kind: ClassicKind, source: string, text: string): RealProgram => {
    const proglenBytes = jitClassic(parseClassicText(text), kind).sized.proglenBytes;
    return { kind, source, proglenBytes, imageBytes: packImageBytes(proglenBytes) };
  };
  const services = new Map<string, RealProgram[]>();
  for (const s of d.seccomp) {
    const list = services.get(s.service) ?? [];
    list.push(classic('seccomp', s.label, s.program));
    services.set(s.service, list);
  }
  const xdp = new Map<string, RealProgram[]>();
  for (const x of d.xdp) {
    xdp.set(
      `${x.object}:${x.program}`,
      x.functions.map((f) => ({
        kind: 'xdp' as const,
        source: `${x.object}:${f.name}`,
        proglenBytes: f.proglenBytes,
        imageBytes: packImageBytes(f.proglenBytes),
      })),
    );
  }
  cached = {
    services,
    tcpdump: d.tcpdump.map((t) => classic('socket', `tcpdump ${t.expr}`, t.program)),
    xdp,
  };
  return cached;
}

const BOOT_SERVICES = ['systemd-journald', 'systemd-networkd', 'systemd-timesyncd', 'systemd-logind'];
const ON_DEMAND = ['systemd-hostnamed', 'systemd-localed', 'systemd-timedated', 'fstrim'];
/** libpcap's drain filter: `ret #0` (one classic instruction). */
const PCAP_DRAIN = '1\n6 0 0 0\n';

export interface BpfRealOptions extends WorkloadOptions {
  /** Day-phase events (before scale); default 400. */
  readonly events?: number;
  /** XDP dispatcher slots enabled per interface; default 1. */
  readonly xdpSlots?: number;
}

function load(b: TraceBuilder, rng: Rng, p: RealProgram): number {
  return emitBpfLoad(b, bpfJitImage(rng, Math.ceil(p.proglenBytes / 4) * 4, 4));
}

export function bpfReal(opts: BpfRealOptions = {}): Trace {
  const seed = seedOf(opts);
  const events = scaled(opts.events ?? 400, scaleOf(opts), 8);
  const rng = new Rng(seed);
  const corpus = bpfRealCorpus();
  const b = new TraceBuilder('bpf-real', seed);
  const drain = classicDrain();
  const startService = (name: string): number[] =>
    (corpus.services.get(name) ?? []).map((p) => load(b, rng, p));
  const running = new Map<string, number[]>();
  b.phase('boot');
  for (const s of BOOT_SERVICES) running.set(s, startService(s));
  const dispatcher = corpus.xdp.get('xdp-dispatcher.o:xdp_dispatcher') ?? [];
  const filter = corpus.xdp.get('xdpfilt_dny_all.o:xdpfilt_dny_all') ?? [];
  const slots = Math.max(1, opts.xdpSlots ?? 1);
  for (let nic = 0; nic < 2; nic++) {
    // The dispatcher's main function and its first `slots` prog<N> subprograms, then the program.
    for (const p of dispatcher.slice(0, 1 + slots)) load(b, rng, p);
    for (const p of filter) load(b, rng, p);
  }
  b.exec(10_000);
  b.phase('day');
  const sessions = new LiveSet<number[]>();
  for (let n = 0; n < events; n++) {
    const r = rng.next();
    if (r < 0.5) {
      // A bus-activated service: start if idle, else it exits.
      const s = rng.pick(ON_DEMAND);
      const ids = running.get(s);
      if (ids) {
        for (const id of ids) b.free(id);
        running.delete(s);
      } else running.set(s, startService(s));
    } else if (r < 0.8) {
      if (sessions.size > 0 && (sessions.size >= 3 || rng.next() < 0.5)) {
        for (const id of sessions.takeRandom(rng)) b.free(id);
      } else {
        const drainId = load(b, rng, drain);
        const id = load(b, rng, rng.pick(corpus.tcpdump));
        b.free(drainId); // replaced by the real filter
        sessions.add([id]);
      }
    } else if (r < 0.85) {
      // A long-running service restarts: the new process's filters load before the old exit.
      const s = rng.pick(BOOT_SERVICES);
      const fresh = startService(s);
      for (const id of running.get(s) ?? []) b.free(id);
      running.set(s, fresh);
    }
    if (n % 50 === 49) b.exec(10_000);
  }
  b.exec(10_000);
  return b.build();
}

let drainCached: RealProgram | null = null;
function classicDrain(): RealProgram {
  if (drainCached) return drainCached;
  const proglenBytes = jitClassic(parseClassicText(PCAP_DRAIN), 'socket').sized.proglenBytes;
  drainCached = {
    kind: 'socket',
    source: 'libpcap drain (ret #0)',
    proglenBytes,
    imageBytes: packImageBytes(proglenBytes),
  };
  return drainCached;
}

/** Image-size histogram bucket upper bounds (bytes). */
export const BPF_SIZE_BUCKETS = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 65536] as const;

export interface BpfSizeHistogram {
  readonly bucketsBytes: readonly number[];
  /** Loads whose JIT image (imageBytes) falls in each bucket (<= bound, > previous bound). */
  readonly loads: readonly number[];
  readonly totalLoads: number;
  /** Share of loads whose JIT length is under 500 B / 2 KiB (Song Liu's published 50% / 75%). */
  readonly under500B: number;
  readonly under2KiB: number;
}

/** Image sizes of one trace's BPF loads, bucketed by BPF_SIZE_BUCKETS upper bounds. */
export interface BpfImageHistogram {
  /** Loads whose image falls in each bucket (<= bound, > previous bound; the last takes the rest). */
  readonly loads: readonly number[];
  readonly totalLoads: number;
  readonly medianImageBytes: number;
}

/** Bucket every `bpf` alloc of a trace by its size (the image the allocator is asked for). */
export function bpfImageHistogram(trace: Trace): BpfImageHistogram {
  const loads = BPF_SIZE_BUCKETS.map(() => 0);
  const sizes: number[] = [];
  for (const ev of trace.events) {
    if (ev.op !== 'alloc' || ev.type !== 'bpf') continue;
    const i = BPF_SIZE_BUCKETS.findIndex((bound) => ev.sizeBytes <= bound);
    loads[i < 0 ? loads.length - 1 : i]++;
    sizes.push(ev.sizeBytes);
  }
  assert(sizes.length > 0, `trace ${trace.name} has no bpf allocations`);
  sizes.sort((a, b) => a - b);
  return { loads, totalLoads: sizes.length, medianImageBytes: sizes[Math.floor(sizes.length / 2)] };
}

/**
 * The size histogram of bpf-real's loads, for the report beside the published mix the synthetic
 * bpf-churn uses (50% < 500 B, 75% < 2 KiB): sizes are the JIT lengths (programs), buckets count
 * allocations (images), over the trace's alloc events.
 */
export function bpfRealSizeHistogram(opts: BpfRealOptions = {}): BpfSizeHistogram {
  const trace = bpfReal(opts);
  const { loads, totalLoads } = bpfImageHistogram(trace);
  let u500 = 0;
  let u2k = 0;
  const codeBytes = new Map<number, number>();
  for (const ev of trace.events) {
    if (ev.op === 'write' && ev.functions) codeBytes.set(ev.id, ev.functions[0][1]);
  }
  for (const progBytes of codeBytes.values()) {
    if (progBytes < 500) u500++;
    if (progBytes < 2048) u2k++;
  }
  return {
    bucketsBytes: BPF_SIZE_BUCKETS,
    loads,
    totalLoads,
    under500B: u500 / totalLoads,
    under2KiB: u2k / totalLoads,
  };
}
