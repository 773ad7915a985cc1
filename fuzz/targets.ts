/**
 * Every fuzz target by name (one file each beside this one). A new target is one line here.
 */
import { apiTarget } from './api.js';
import { elfTarget } from './elf.js';
import type { FuzzTarget } from './target.js';

export const FUZZ_TARGETS: readonly FuzzTarget[] = [apiTarget, elfTarget];
