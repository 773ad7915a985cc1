/**
 * Option parsers shared by the subcommands (arch, seed, scale, lists), and the --arch/--seed/--scale
 * trio itself (addRunOptions).
 *
 * Why commander argument parsers: a bad value is a usage error and must be reported before any
 * work starts, with commander's one-line "option '--seed <n>' argument 'x' is invalid. ..."
 * message and exit code 2 (program.ts maps commander errors to 2). Limits are explicit so a typo
 * such as `--scale 1e9` cannot start an hour-long run.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { ARCHES, type ArchName } from '../arch/index.js';
import { UsageError } from './io.js';

export const SCALE_MIN = 0.001;
export const SCALE_MAX = 100;

export function parseArch(value: string): ArchName {
  if (!Object.hasOwn(ARCHES, value)) {
    throw new InvalidArgumentError(`unknown arch (known: ${Object.keys(ARCHES).join(', ')})`);
  }
  return value as ArchName;
}

export function parseSeed(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n > 0xffffffff) {
    throw new InvalidArgumentError('the seed must be an integer in [0, 4294967295]');
  }
  return n;
}

export function parseScale(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < SCALE_MIN || n > SCALE_MAX) {
    throw new InvalidArgumentError(`the scale must be a number in [${SCALE_MIN}, ${SCALE_MAX}]`);
  }
  return n;
}

export function parsePositiveInt(value: string, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > max) {
    throw new InvalidArgumentError(`expected an integer in [1, ${max}]`);
  }
  return n;
}

/** Help wording of the run options that differs between commands (what the seed also seeds). */
export interface RunOptionsHelp {
  readonly seed: string;
  readonly scale?: string;
}

/**
 * --arch, --seed and --scale: the options of every command that replays a workload on the
 * simulated machine. Flags, parsers and defaults are the same everywhere (so `compare`, `report`,
 * `stats` and `ptdump` runs with the same values are the same runs); only the help text differs.
 */
export function addRunOptions<C extends Command>(cmd: C, help: RunOptionsHelp): C {
  return cmd
    .option('-a, --arch <arch>', 'x86_64, arm64 or generic', parseArch, 'x86_64')
    .option('-s, --seed <n>', help.seed, parseSeed, 1)
    .option('--scale <x>', help.scale ?? 'workload size factor', parseScale, 1);
}

/** "a,b , c" -> ['a','b','c']; rejects empty items and duplicates. */
export function parseList(value: string): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new InvalidArgumentError('empty item in the list');
  if (new Set(items).size !== items.length) throw new InvalidArgumentError('duplicate item in the list');
  return items;
}

/** A name that must be one of `known` (checked inside an action): UsageError listing them. */
export function checkName(kind: string, name: string, known: readonly string[]): void {
  if (!known.includes(name)) {
    throw new UsageError(`unknown ${kind} '${name}' (known: ${known.join(', ')})`);
  }
}
