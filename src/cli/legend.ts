/**
 * The legend printed under the terminal tables of `execmem compare` and `execmem report`.
 *
 * Why one function for both: the two commands print the same columns from the same formatters
 * (src/metrics/report/format.ts: the headings, binary size units, "," thousands separators, ratios
 * with "x"); a reader moving from one to the other must also find the same explanation under the
 * table, so the words live here once and both commands print them.
 */
import { flushLegend } from '../metrics/report/vocabulary.js';

export function tableLegend(arch: string): string[] {
  return [
    'Columns: kernel = the Linux version each row re-implements on the simulated machine (ours = this ' +
      'project); sizes in binary units (KiB, MiB = 1024^2 bytes); counts with "," between thousands; ' +
      'mapped/live and similar ratios with "x"; exec on 2M = share of the mapped executable bytes on 2 MiB leaves.',
    `iTLB miss/M = misses per million instruction fetches, the lower bound in parentheses (an infinite TLB with the same flushes, per CPU). ${flushLegend(arch)}`,
  ];
}
