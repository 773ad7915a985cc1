/**
 * What in a report is modelled and what is real, stated once and shown on the page, in
 * summary.md and in the README's report section.
 *
 * Why: the project's rule is honesty about the simulation. A reader must not take a shootdown
 * count from the simulated machine for a measurement of a running kernel. The simulator's own
 * speed is not in the report at all (it times TypeScript, not a kernel; issue 11 item 12); the
 * text says where it is and why it is left out. Worded in the run's arch's terms (vocabulary.ts).
 */
import { vocabularyFor } from './vocabulary.js';

/** The provenance lines of a report on `arch` whose machines used the TLB profile `tlb`. */
export function modelledVsReal(arch: string, tlb: string): string[] {
  const v = vocabularyFor(arch);
  const flushes = v.globalFlushKeys.includes('broadcastFlushes')
    ? 'local flushes, broadcast TLB invalidations (TLBI ...IS, no IPIs) and IPI shootdowns'
    : 'local flushes, IPI shootdowns and broadcast invalidations';
  return [
    'Modelled: the kernel machine. Physical frames, 4-level page tables with 4 KiB / 2 MiB / 1 GiB leaves, ' +
      `the ${v.physMap}, vmalloc and the module area, per-CPU TLBs, ${flushes} are a simulation in ` +
      'TypeScript; their counts are consequences of simulated page-table operations, not readings from a kernel.',
    'Modelled: the Linux designs (module_alloc, execmem without cache, the execmem ROX cache, bpf_prog_pack, ' +
      'the 2023 jit_alloc slab) are re-implementations on that machine from their sources, not Linux code; ' +
      'each names the kernel version it models.',
    `Modelled: iTLB misses come from a TLB model with published geometry (${tlb}), fed by instruction fetches of ` +
      'Zipf-hot functions; TLBs stay warm across samples (steady state); the lower bound is the misses an infinite TLB with the same flushes would take, per CPU.',
    'Modelled: kernel time is the counted events times published costs measured on other machines (the cost ' +
      'table names each source and CPU); events without a published cost are counted and left out, and the ' +
      'ranking is checked against every weight halved and doubled.',
    "Not shown: the simulator's own throughput (simulatorOpsPerSecond in `execmem compare --json`) times these " +
      'TypeScript implementations in one process, varies up to 2x between runs and says nothing about kernel ' +
      'speed, so no table, chart or ranking uses it.',
    'Measured: the debian-modules workload uses the per-module section sizes of every .ko of a real Debian ' +
      'kernel package (a table generated from the files), in dependency order; the bytes it writes are synthetic. ' +
      'Real bytes with their relocations are loaded by the execmem modules load command once the package is fetched.',
    'Real: the execmem host command (not part of this report) runs the same allocator on real memory of this process.',
  ];
}
