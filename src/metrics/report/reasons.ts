/**
 * Why ours does not lead on a figure, as rules over what the run measured (issue 13 item 5).
 *
 * Why rules and not sentences per figure or per workload: a reason must be true of the run it is
 * printed under. Each rule names the figures it can explain, checks its condition on the run's
 * own numbers (ours' and the leader's metrics, their kernel-event counts, ours' area map and
 * counters) and, only when the condition holds, says what it found with those numbers in the
 * text. Nothing here knows a workload's name. Where no rule's condition holds, the summary says
 * that no rule explains it (NO_REASON) instead of inventing one.
 */
import { EXECMEM_TYPES, typeIsText } from '../../arch/types.js';
import { COST_TABLE, costLabel, type KernelEventKey } from '../kernel-time-costs.js';
import { formatBytes, formatCount, formatDuration } from './format.js';
import type { AreaMap, MetricKey, PolicyRun, WorkloadRun } from './types.js';
import { vocabularyFor } from './vocabulary.js';

export const NO_REASON = 'no rule over this run’s figures explains it; see the workload’s tables';

/** What a rule looks at: one run, ours, the design that leads on the figure, and the figure. */
export interface ReasonContext {
  readonly run: WorkloadRun;
  readonly ours: PolicyRun;
  readonly leader: PolicyRun;
  readonly key: MetricKey;
}

export interface ReasonRule {
  /** Short stable name (tests and the page's data attributes). */
  readonly id: string;
  readonly figures: readonly MetricKey[];
  /** The reason with the run's numbers, or null when the rule's condition does not hold. */
  explain(c: ReasonContext): string | null;
}

interface BlockCounts {
  readonly mapped: number;
  readonly large: number;
  /** Mapped blocks with nothing live in them. */
  readonly spare: number;
  /** Mapped blocks holding live text (module_text, kprobes, ftrace, bpf). */
  readonly text: number;
}

function blocks(area: AreaMap | null): BlockCounts | null {
  if (area === null) return null;
  let mapped = 0;
  let large = 0;
  let spare = 0;
  let text = 0;
  for (const r of area.regions) {
    if (r.mappedBytes === 0) continue;
    mapped++;
    if (r.largeLeaf) large++;
    const live = EXECMEM_TYPES.reduce((sum, t) => sum + (r.liveBytesByType[t] ?? 0), 0);
    if (live === 0) spare++;
    if (EXECMEM_TYPES.some((t) => typeIsText(t) && (r.liveBytesByType[t] ?? 0) > 0)) text++;
  }
  return { mapped, large, spare, text };
}

function count(p: PolicyRun, key: KernelEventKey): number {
  return p.kernelTime.byEvent[key].count;
}

function eventLabel(key: KernelEventKey, arch: string): string {
  const entry = COST_TABLE.find((e) => e.key === key);
  return entry ? costLabel(entry, arch) : key;
}

/** Event classes that cause a figure; a rule lists those where ours counts more than the leader. */
const CAUSES: Readonly<Partial<Record<MetricKey, readonly KernelEventKey[]>>> = {
  shootdowns: ['cpaCalls', 'largePageSplits', 'largePageCollapses', 'vfrees'],
  ipis: ['cpaCalls', 'largePageSplits', 'largePageCollapses', 'vfrees'],
  broadcastFlushes: ['cpaCalls', 'largePageSplits', 'largePageCollapses', 'vfrees'],
  directMap4kGrowthBytes: ['largePageSplits', 'cpaCalls'],
  directMapSplits: ['largePageSplits', 'cpaCalls'],
  permissionFlips: ['cpaCalls'],
};

export const REASON_RULES: readonly ReasonRule[] = [
  {
    // Large-page pools map whole 2 MiB blocks: on a small live set their free space dominates.
    id: 'whole-blocks',
    figures: ['overhead', 'mappedBytes'],
    explain: ({ ours, leader }) => {
      const b = blocks(ours.area);
      if (b === null || ours.area === null || b.large === 0) return null;
      const largeBytes = b.large * ours.area.regionBytes;
      const unused = ours.metrics.mappedBytes - ours.metrics.liveBytes;
      const theirs = leader.metrics.mappedBytes - leader.metrics.liveBytes;
      if (largeBytes < 0.5 * ours.metrics.mappedBytes || unused <= theirs) return null;
      const of =
        largeBytes >= ours.metrics.mappedBytes
          ? `all of its ${formatBytes(ours.metrics.mappedBytes)} mapped`
          : `${formatBytes(largeBytes)} of its ${formatBytes(ours.metrics.mappedBytes)} mapped`;
      // The least ours can map for these objects (ExecmemPolicy.mappedBoundBytes): text on 2 MiB.
      const bound = ours.counters.mappedBoundBytes;
      const live = ours.metrics.liveBytes;
      const reach =
        bound === undefined || live <= 0
          ? ''
          : `; with text on 2 MiB leaves (for iTLB reach) it cannot map less than ${formatBytes(bound)} ` +
            `(${(bound / live).toFixed(2)}x live${bound > leader.metrics.mappedBytes ? `, more than ${leader.name} maps` : ''})`;
      return (
        `ours maps ${b.large} whole 2 MiB block${b.large === 1 ? '' : 's'} (${of}` +
        `${b.spare > 0 ? `, ${b.spare} with nothing live` : ''}) for ${formatBytes(ours.metrics.liveBytes)} live, ` +
        `${formatBytes(unused)} unused; ${leader.name} maps ${formatBytes(leader.metrics.mappedBytes)}, ` +
        `${formatBytes(theirs)} unused${reach}`
      );
    },
  },
  {
    // Every alias-write step ends in a flush of its own (text_poke: a local flush per step).
    id: 'write-steps',
    figures: ['allFlushEvents', 'localFlushes'],
    explain: ({ run, ours, leader }) => {
      const steps = count(ours, 'pokeSteps');
      const theirs = count(leader, 'pokeSteps');
      if (steps === 0 || steps < 0.5 * ours.metrics.allFlushEvents || steps <= theirs) return null;
      const v = vocabularyFor(run.arch);
      return (
        `${formatCount(steps)} of ours' ${formatCount(ours.metrics.allFlushEvents)} flush events end ${v.patching} ` +
        `steps (each step ends in its own ${v.stepFlush}); ${leader.name} takes ${formatCount(theirs)} such steps`
      );
    },
  },
  {
    // Rule 6: freed ranges are trap-filled, written through the alias like any update.
    id: 'trap-fill-on-free',
    figures: ['allFlushEvents', 'localFlushes', 'modelledKernelTimeNs'],
    explain: ({ run, ours, leader }) => {
      const frees = ours.counters.frees ?? 0;
      if (frees === 0 || count(ours, 'pokeSteps') <= count(leader, 'pokeSteps')) return null;
      const updates = ours.counters.updates;
      return (
        `ours trap-fills every freed range through ${vocabularyFor(run.arch).patching} (DESIGN.md rule 6): ` +
        `${formatCount(frees)} frees${updates === undefined ? '' : ` next to ${formatCount(updates)} updates`}`
      );
    },
  },
  {
    // Kernel time: the event class where ours spends most more than the leader.
    id: 'kernel-time-excess',
    figures: ['modelledKernelTimeNs'],
    explain: ({ run, ours, leader }) => {
      let worst: KernelEventKey | null = null;
      let excess = 0;
      for (const e of COST_TABLE) {
        const d = ours.kernelTime.byEvent[e.key].ns - leader.kernelTime.byEvent[e.key].ns;
        if (d > excess) {
          excess = d;
          worst = e.key;
        }
      }
      if (worst === null) return null;
      return (
        `ours spends ${formatDuration(excess)} more on ${eventLabel(worst, run.arch)} ` +
        `(${formatCount(count(ours, worst))} events against ${formatCount(count(leader, worst))})`
      );
    },
  },
  {
    // Global flushes and direct-map damage come from permission changes, splits and vfrees.
    id: 'more-causes',
    figures: Object.keys(CAUSES) as MetricKey[],
    explain: ({ run, ours, leader, key }) => {
      const more = (CAUSES[key] ?? []).filter((e) => count(ours, e) > count(leader, e));
      if (more.length === 0) return null;
      const parts = more.map(
        (e) =>
          `${eventLabel(e, run.arch)}: ${formatCount(count(ours, e))} against ${formatCount(count(leader, e))}`,
      );
      return `ours counts more of what causes it (${parts.join('; ')})`;
    },
  },
  {
    // Fewer large leaves: some of ours' blocks are mapped with small pages.
    id: 'small-leaves',
    figures: ['largePageShare'],
    explain: ({ ours }) => {
      const b = blocks(ours.area);
      if (b === null || b.mapped === b.large) return null;
      const fallbacks = ours.counters.hugeFallbacks ?? 0;
      return (
        `${b.mapped - b.large} of ours' ${b.mapped} mapped 2 MiB blocks use smaller leaves` +
        (fallbacks > 0 ? `; ${formatCount(fallbacks)} 2 MiB allocations fell back to 4 KiB pages` : '')
      );
    },
  },
  {
    // iTLB: more page walks, and code spread over more 2 MiB blocks.
    id: 'itlb-walks',
    figures: ['itlbMissesPerMillion'],
    explain: ({ ours, leader }) => {
      const a = count(ours, 'itlbWalks');
      const b = count(leader, 'itlbWalks');
      if (a <= b) return null;
      const mine = blocks(ours.area);
      const theirs = blocks(leader.area);
      const spread =
        mine && theirs
          ? `; ours' code lies in ${mine.text} 2 MiB blocks, ${leader.name}'s in ${theirs.text}`
          : '';
      return `ours takes ${formatCount(a)} iTLB page walks against ${formatCount(b)}${spread}`;
    },
  },
];

/** Every rule's reason that holds for this figure, joined; NO_REASON when none does. */
export function whyOursTrails(c: ReasonContext): string {
  const found = REASON_RULES.filter((r) => r.figures.includes(c.key))
    .map((r) => r.explain(c))
    .filter((t): t is string => t !== null);
  return found.length > 0 ? found.join('; ') : NO_REASON;
}
