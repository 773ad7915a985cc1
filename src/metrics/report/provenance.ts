/**
 * What in a report is modelled and what is real, stated once and shown on the page, in
 * summary.md and in the README's report section.
 *
 * Why: the project's rule is honesty about the simulation. A reader must not take a shootdown
 * count from the simulated machine for a measurement of a running kernel, nor a speed ratio of
 * TypeScript code for kernel speed.
 */
export const MODELLED_VS_REAL: readonly string[] = [
  'Modelled: the kernel machine. Physical frames, 4-level page tables with 4 KiB / 2 MiB / 1 GiB leaves, ' +
    'the direct map, vmalloc and the module area, per-CPU TLBs, shootdowns and IPIs are a simulation in ' +
    'TypeScript; their counts are consequences of simulated page-table operations, not readings from a kernel.',
  'Modelled: the Linux designs (module_alloc, execmem without cache, the execmem ROX cache, bpf_prog_pack, ' +
    'the 2023 jit_alloc slab) are re-implementations on that machine from their sources, not Linux code.',
  'Modelled: iTLB misses come from a TLB model with published geometry, fed by instruction fetches of ' +
    'Zipf-hot functions; the lower bound is the number of distinct pages touched.',
  'Real: the allocator speed ratio is wall-clock time of these TypeScript implementations in one process ' +
    'run (a ratio against the slowest policy); it says nothing about kernel speed.',
  'Measured: the debian-modules workload uses the per-module section sizes of every .ko of a real Debian ' +
    'kernel package (a table generated from the files), in dependency order; the bytes it writes are synthetic. ' +
    'Real bytes with their relocations are loaded by the execmem modules load command once the package is fetched.',
  'Real: the execmem host command (not part of this report) runs the same allocator on real memory of this process.',
];
