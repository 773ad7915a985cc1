/**
 * What ptdump and stats share: build a simulated machine, pick an allocator (a policy by name),
 * replay a workload on it. Both commands must run the very same code path as `execmem compare`
 * so what they print is what the comparison measured.
 *
 * Why the subsystems are described by small local interfaces and loaded through
 * `loadSubsystem`: the machine and the policies are written concurrently by other engineers;
 * until their files exist these commands exit 1 saying what is missing (never a fake machine).
 */
import type { ArchName, ArchSpec, VaRange } from '../../arch/types.js';
import type { ExecAllocator } from '../../policies/types.js';
import { WORKLOADS } from '../../workloads/registry.js';
import { type ReplayResult, replay } from '../../workloads/replay.js';
import type { CliIo } from '../io.js';
import { checkName } from '../options.js';
import { loadSubsystem } from '../subsystems.js';

/** The part of the machine (src/machine/machine.ts, contract in the team notes) the CLI uses. */
export interface MachineLike {
  readonly arch: ArchSpec;
  readonly cpuCount: number;
  readonly modulesStart: number;
  ptdump(range?: VaRange): string;
  directMapStats(): { bytes4k: number; bytes2m: number; bytes1g: number };
  frameAccounting(): { totalFrames: number; freeFrames: number; tableFrames: number; mappedFrames: number };
  wxViolationCount(): number;
  readonly counters: Readonly<Record<string, number>>;
}

interface MachineModule {
  createMachine(config: { arch?: ArchName; seed?: number }): MachineLike;
}

/** src/policies/index.ts (engineer P): policies by name. */
interface PoliciesModule {
  POLICY_NAMES: readonly string[];
  policyByName(name: string): { create(machine: MachineLike, seed: number): ExecAllocator };
}

export async function newMachine(arch: ArchName, seed: number): Promise<MachineLike> {
  const mod = await loadSubsystem<MachineModule>('machine/machine.js', 'the simulated machine', [
    'createMachine',
  ]);
  return mod.createMachine({ arch, seed });
}

async function loadPolicies(): Promise<PoliciesModule> {
  return loadSubsystem<PoliciesModule>('policies/index.js', 'the policy registry', [
    'POLICY_NAMES',
    'policyByName',
  ]);
}

/** Create policy `name` on `machine` (UsageError listing the known names when it is unknown). */
export async function createPolicy(name: string, machine: MachineLike, seed: number): Promise<ExecAllocator> {
  const policies = await loadPolicies();
  checkName('policy', name, policies.POLICY_NAMES);
  return policies.policyByName(name).create(machine, seed);
}

/** The known policy names (for validating --policy before any work). */
export async function policyNames(): Promise<readonly string[]> {
  return (await loadPolicies()).POLICY_NAMES;
}

/**
 * The module area to dump: the arch's whole area (the KASLR variant when the machine's randomised
 * start lies in it), not just from the random start, so leaves that begin below that start (an
 * allocator may choose its own offset) are shown whole.
 */
export function moduleArea(machine: MachineLike): VaRange {
  const layout = machine.arch.layout;
  return machine.modulesStart >= layout.modulesKaslr.start ? layout.modulesKaslr : layout.modules;
}

export function checkWorkload(name: string): void {
  checkName('workload', name, Object.keys(WORKLOADS));
}

/** Replay a registered workload on `allocator`, with a progress bar. */
export function replayWorkload(
  name: string,
  allocator: ExecAllocator,
  opts: { seed: number; scale: number },
  io: CliIo,
): ReplayResult {
  const trace = WORKLOADS[name].generate({ seed: opts.seed, scale: opts.scale });
  const bar = io.progress(name, trace.events.length);
  let last = 0;
  try {
    return replay(trace, allocator, {
      progress(done) {
        bar.tick(done - last);
        last = done;
      },
    });
  } finally {
    bar.done();
  }
}
