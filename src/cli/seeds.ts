/**
 * `--seeds LIST` and `--jobs N`: which seeds a compare or report runs, and on how many threads.
 *
 * LIST is comma-separated seeds or ascending ranges: `1-5`, `1,3,7`, `1-3,10`. A range that runs
 * backwards (`5-1`), a non-number (`x`), a duplicate, or more than SEEDS_MAX seeds is a usage
 * error (commander's one-line message, exit 2) before any work.
 */
import { InvalidArgumentError } from 'commander';
import { POOL_JOBS_MAX } from './pool.js';

export const SEEDS_MAX = 100;
const SEED_MAX = 0xffffffff;

function seedValue(text: string, list: string): number {
  if (!/^\d+$/.test(text) || Number(text) > SEED_MAX)
    throw new InvalidArgumentError(`'${text}' in '${list}' is not a seed (an integer in [0, ${SEED_MAX}])`);
  return Number(text);
}

export function parseSeeds(value: string): number[] {
  const seeds: number[] = [];
  for (const raw of value.split(',')) {
    const item = raw.trim();
    if (item === '') throw new InvalidArgumentError(`an empty item in '${value}'`);
    const range = /^(\d+)-(\d+)$/.exec(item);
    if (range === null) {
      seeds.push(seedValue(item, value));
      continue;
    }
    const from = seedValue(range[1], value);
    const to = seedValue(range[2], value);
    if (to < from) throw new InvalidArgumentError(`the range ${item} runs backwards (write ${to}-${from})`);
    if (to - from + 1 > SEEDS_MAX) throw new InvalidArgumentError(`more than ${SEEDS_MAX} seeds`);
    for (let s = from; s <= to; s++) seeds.push(s);
  }
  if (seeds.length > SEEDS_MAX) throw new InvalidArgumentError(`more than ${SEEDS_MAX} seeds`);
  const twice = seeds.find((s, i) => seeds.indexOf(s) !== i);
  if (twice !== undefined) throw new InvalidArgumentError(`seed ${twice} appears twice`);
  return seeds;
}

export function parseJobs(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > POOL_JOBS_MAX)
    throw new InvalidArgumentError(`expected an integer in [1, ${POOL_JOBS_MAX}]`);
  return n;
}
