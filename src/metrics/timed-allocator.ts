/**
 * The compare harness's wrapper that times every allocator call of a design (performance.now
 * around each call, outside the W^X sampling and the fetch model): the simulator's own throughput,
 * simulatorOpsPerSecond in `compare --json` (src/metrics/compare.ts says why it is in no table).
 * Moved out of compare.ts to keep that file readable; behaviour unchanged.
 */
import type { ExecmemType } from '../arch/index.js';
import {
  type AllocHint,
  allocModuleSections,
  type ExecAllocator,
  type ModuleSection,
} from '../policies/types.js';

/** Allocator calls timed one by one; the sum is the allocator's time in this run. */
export class TimedAllocator implements ExecAllocator {
  elapsedMs = 0;
  ops = 0;
  /** Forwarded where the design batches (replay.ts); the calls inside are timed one by one. */
  readonly batch?: (fn: () => void) => void;
  constructor(private readonly inner: ExecAllocator) {
    const b = inner.batch;
    if (b !== undefined) this.batch = (fn) => b.call(inner, fn);
  }
  get name(): string {
    return this.inner.name;
  }
  private timed<T>(fn: () => T): T {
    const t0 = performance.now();
    try {
      return fn();
    } finally {
      this.elapsedMs += performance.now() - t0;
      this.ops++;
    }
  }
  alloc(type: ExecmemType, sizeBytes: number, alignBytes?: number, hint?: AllocHint): number {
    return this.timed(() => this.inner.alloc(type, sizeBytes, alignBytes, hint));
  }
  allocModule(sections: readonly ModuleSection[]): number[] {
    return this.timed(() => allocModuleSections(this.inner, sections));
  }
  write(va: number, bytes: Uint8Array): void {
    this.timed(() => this.inner.write(va, bytes));
  }
  finalize(va: number): void {
    this.timed(() => this.inner.finalize(va));
  }
  seal(va: number): void {
    this.timed(() => this.inner.seal(va));
  }
  free(va: number): void {
    this.timed(() => this.inner.free(va));
  }
  shrink(): void {
    this.timed(() => this.inner.shrink());
  }
  usage(): { liveBytes: number; mappedBytes: number } {
    return this.inner.usage();
  }
}
