/**
 * The workload registry: every generator by the name the CLI and reports use.
 *
 * Why a table: `execmem compare --workload NAME` and the reports must find a workload by name and
 * print what it is, and a new workload should need one line here and nothing else. Each entry
 * takes only the common options (seed, scale); the generator functions themselves take more.
 */
import { bpfAaronLu, bpfChurn } from './bpf.js';
import { bpfReal } from './bpf-real.js';
import type { WorkloadOptions } from './builder.js';
import { debianModules, debianModulesArm64 } from './dataset/workload.js';
import { FTRACE_REAL } from './ftrace-real.js';
import { mixed } from './mixed.js';
import { modulesSynthetic } from './modules.js';
import type { Trace } from './trace.js';
import { trampolines } from './trampolines.js';

/**
 * The machine a workload runs on unless the caller says otherwise: a workload that reproduces a
 * published experiment runs on a machine in the state that experiment had, and says why.
 */
export interface WorkloadMachine {
  readonly memoryBytes?: number;
  /** PhysMem.age fraction: share of free 2 MiB blocks that get one page pinned (scattered memory). */
  readonly ageFraction?: number;
  /** Age when the replay reaches this phase marker (after the workload's boot), not before it. */
  readonly agePhase?: string;
  readonly why: string;
}

export interface WorkloadSpec {
  readonly describe: string;
  readonly machine?: WorkloadMachine;
  /** The trace, already checked by validateTrace (TraceBuilder.build does it): callers do not check it again. */
  generate(opts?: WorkloadOptions): Trace;
}

export const WORKLOADS: Readonly<Record<string, WorkloadSpec>> = {
  'bpf-churn': {
    describe:
      'BPF programs loaded and unloaded around 1000 live, sizes with the published mix (50% < 500 B, 75% < 2 KiB), JIT image overhead included',
    generate: (opts) => bpfChurn(opts),
  },
  'bpf-aaronlu': {
    describe: "Aaron Lu's test: 2048 sockex1 instances of three small JIT images (64, 64, 192 B), all loaded",
    // <Y2ioTodn+mBXdIqp@ziqianlu-desk2>: an 8 GB x86-64 VM that had been running (DirectMap4k
    // 87,900 kB before the test). Its 6144 page-sized images landed in 765 distinct 2 MiB regions
    // (DirectMap4k +1,566,720 kB); a fresh simulated machine hands out consecutive frames and would
    // touch a dozen. So the machine boots fresh (the workload's boot phase loads systemd's few
    // programs, which is when a bpf_prog_pack kernel maps its pack), then ages: one free 2 MiB block
    // in five gets a page pinned, and the buddy allocator's order-0 pages come from about 819
    // scattered blocks. The state resembles his; it is not fitted to the result.
    machine: {
      memoryBytes: 8 * 2 ** 30,
      ageFraction: 0.2,
      agePhase: 'test',
      why: "Aaron Lu's 8 GB VM: boots fresh, then runs until free memory is scattered (one 2 MiB block in five holds a page in use) before the test",
    },
    generate: (opts) => bpfAaronLu(opts),
  },
  'bpf-real': {
    describe:
      'real BPF programs of one Debian machine (systemd seccomp filters, tcpdump sessions, libxdp XDP programs), sizes from our x86 JIT (Linux 6.1), loaded and unloaded as services start and exit',
    generate: (opts) => bpfReal(opts),
  },
  'ftrace-real': FTRACE_REAL,
  trampolines: {
    describe:
      'ftrace and BPF trampolines and 16 B kprobe instruction slots attached and detached (mix assumed)',
    generate: (opts) => trampolines(opts),
  },
  'modules-synthetic': {
    describe:
      'module section sets (text, rodata, ro_after_init, data, init) loaded, init freed, ro_after_init sealed, some unloaded; sizes assumed',
    generate: (opts) => modulesSynthetic(opts),
  },
  'debian-modules': {
    describe:
      'the 1121 modules of a Debian linux-image-cloud-amd64 package (section sizes measured from the real .ko files, shipped table): boot in dependency order, init, then unload/reload churn',
    generate: (opts) => debianModules(opts),
  },
  'debian-modules-arm64': {
    describe:
      'the modules of a Debian linux-image-cloud-arm64 package (sizes measured from the real .ko files with the PLT room arm64 reserves, shipped table): boot in dependency order, init, then unload/reload churn',
    generate: (opts) => debianModulesArm64(opts),
  },
  mixed: {
    describe: 'modules boot, then modules, BPF churn and trampolines interleaved over a long run',
    generate: (opts) => mixed(opts),
  },
};

export function workloadByName(name: string): WorkloadSpec {
  const spec = (WORKLOADS as Record<string, WorkloadSpec | undefined>)[name];
  if (!spec) throw new RangeError(`unknown workload '${name}' (known: ${Object.keys(WORKLOADS).join(', ')})`);
  return spec;
}
