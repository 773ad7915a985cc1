/** The architecture table: look an arch up by name. */
import { arm64 } from './arm64.js';
import { generic } from './generic.js';
import type { ArchName, ArchSpec } from './types.js';
import { x86_64 } from './x86_64.js';

export const ARCHES: Readonly<Record<ArchName, ArchSpec>> = { x86_64, arm64, generic };

export function archByName(name: string): ArchSpec {
  const arch = (ARCHES as Record<string, ArchSpec | undefined>)[name];
  if (!arch) throw new RangeError(`unknown arch '${name}' (known: ${Object.keys(ARCHES).join(', ')})`);
  return arch;
}

export * from './types.js';
export { arm64, generic, x86_64 };
