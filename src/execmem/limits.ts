/**
 * execmem's sizes and limits, each with the measurement or the kernel fact that chose it.
 *
 * Why a file of its own: these numbers are the allocator's tuning, argued one by one below;
 * execmem.ts (the operations), pools.ts (pools and the block directory) and args.ts (argument
 * checking) all read them, and a reader looking for "why 64 B" or "why 256 KiB" finds every
 * answer in one place.
 */
import { SZ_2M, SZ_4K } from '../base/addr.js';
import type { TypeClass } from './ranges.js';

/** How types share pools (a measurement knob; 'family' is the design). */
export type PoolSharing = 'family' | 'type' | 'kind';

/**
 * Packing granule, chosen by measurement (bench/execmem.ts, BPF churn, fake backend, small objects
 * apart): after 200k ops at 10k live both end at mapped/requested 1.207 on seed 23, and 16 B is
 * one block (4%) lower on two of seeds 1-6 (means 1.138 vs 1.151); after 2M ops at 100k live
 * 1.051 vs 1.055 (seed 23) and 1.058 vs 1.046 (seed 5). The rounding costs 0.2% vs 0.7% of live
 * bytes, side tables are about the same (they scale with runs, not granules), and throughput is
 * equal within noise. 64 B wins on what remains: every object starts on a cache
 * line (what JITs align function entries to), and it equals bpf_prog_pack's chunk, so the
 * comparison with Linux is like for like.
 */
export const DEFAULT_GRANULE_BYTES = 64;
/** Blocks are one 2 MiB leaf (PMD) each (every pool but ro_after_init). */
export const BLOCK_BYTES = SZ_2M;
/**
 * ro_after_init blocks: 256 KiB mapped with 4 KiB leaves, by design. The pool is page-granular
 * and sealed page by page after init, which splits a 2 MiB leaf anyway, so a large page buys it
 * nothing, while a whole 2 MiB block for a pool that is "a pretty small portion of modules" costs
 * most of it as empty mapped memory (tglx: "keep 2M pages for text and RW data, and split one
 * page for rodata", research/lkml-thread.md section 5). 256 KiB = 64 pages: big enough that a
 * typical module's ro_after_init (a few pages) packs many to a block, small enough that one spare
 * block (shrink's hysteresis) costs at most 256 KiB. Objects above it get their own 4 KiB-leaf
 * mapping, rounded to the page. Measured (cli compare/stats, mixed workload): the pool holds
 * 268 KiB live in 512 KiB mapped instead of 2048 KiB; execmem's mapped/live 1.61 -> 1.49.
 */
export const RO_AFTER_INIT_BLOCK_BYTES = 256 * 1024;
/**
 * Objects below this size (granule-rounded) are placed apart from larger ones: SMALL blocks hold
 * only them, and they spill into holes of LARGE blocks only when the SMALL blocks are full (never
 * the reverse), so small objects do not chop up the holes large ones need. Measured
 * (bench/execmem.ts, BPF churn, fake backend): mapped/requested after a 2M-op churn at 100k live
 * 1.122 -> 1.055 (seed 23), after 200k-op churns at 10k live, mean of seeds 1-6, 1.192 -> 1.151.
 * 2 KiB is the published BPF split ("75% ... less than 2kB", Song Liu
 * <20221107223921.3451913-1-song@kernel.org>); in a first version without spill, 1 KiB, 4 KiB
 * and three classes (512 B / 2 KiB / 8 KiB) measured worse than 2 KiB at 10k live (more partly
 * filled blocks). Pools at page granule (ro_after_init) have no small class.
 */
export const SMALL_OBJECT_BYTES = 2048;
/**
 * The split turns on once a pool has this many blocks (32 MiB); smaller pools keep small and large
 * objects together. The SMALL blocks' last, partly filled block costs about half a block in any
 * pool; the holes the split saves pay only under churn (about 6% of the pool at 100k live).
 * Measured, execmem's mapped/live with the split from 0 / 8 / 16 blocks (unsplit): cli compare
 * mixed 2.13 / 1.49 / 1.49 (1.49), debian-modules 1.22 / 1.17 / 1.12 (1.12); BPF churn at 10k
 * live, mean over seeds 1-6 and 23, 1.147 / 1.141 / 1.159 (1.194). 16 leaves every compare
 * workload where it was.
 */
export const SPLIT_MIN_BLOCKS = 16;
/**
 * Blocks of a family's small tier, mapped with 4 KiB leaves (the rule: LARGE_TIER_FROM_BYTES):
 * 16 KiB for RW families (a new block needs no protection change), 64 KiB for read-only ones,
 * where every new block costs a set_memory_ro (a CPA call, a flush, and a direct-map split when
 * its frames lie in a 2 MiB region not yet split): four times fewer blocks for at most 48 KiB
 * more in the last, partly filled one.
 */
export const SMALL_TIER_BLOCK_BYTES = 16 * 1024;
export const SMALL_TIER_RO_BLOCK_BYTES = 64 * 1024;
/**
 * Live bytes from which a family's new objects go to its 2 MiB blocks instead of its small tier
 * (4 KiB leaves, SMALL_TIER_*_BLOCK_BYTES blocks; 0: 2 MiB blocks from the first byte). A family
 * goes back to its small tier below half its threshold (hysteresis), and either tier fills the
 * other's holes before mapping a block. Chosen per class (numbers: docs/MEMORY.md, cli compare,
 * x86_64, seed 1):
 * - text 0: a large page pays for itself in iTLB reach from the first bytes. jit_alloc-2023 packs
 *   BPF on 4 KiB pages and takes 12,699 iTLB misses per million fetches on bpf-aaronlu (640 KiB
 *   live) where one 2 MiB block takes 69, and 348 against 1.4 on bpf-real (100 KiB live): far
 *   above what any memory saving is worth, and above the iTLB target. So text maps at
 *   least its live bytes rounded up to 2 MiB per pool: the bound the bench reports.
 * - rodata 16 MiB: every new read-only small block is a set_memory_ro (a CPA call, a shootdown,
 *   and a direct-map split where its frames share a 2 MiB leaf with others), which 2 MiB-aligned
 *   frames avoid; but a family that moves to 2 MiB blocks early leaves both tiers partly filled
 *   once modules unload. debian-modules (ours replayed, seed 1): at 2 MiB mapped/live 1.196 at
 *   scale 0.25 with 194 shootdowns and 4 splits; at 16 MiB 1.108 with 220 and 5 (scale 1: 656
 *   shootdowns and 8 splits become 803 and 14, still a sixth of the best Linux design's). No
 *   other workload's rodata reaches 2 MiB live, so nothing else moved.
 * - data and ro_after_init 16 MiB: a RW block needs no protection change and ro_after_init is
 *   sealed page by page whatever its block, so the small tier costs little; above 16 MiB a 2 MiB
 *   block's last, partly filled part is at most 1/8 of the family.
 */
export const LARGE_TIER_FROM_BYTES: Readonly<Record<TypeClass, number>> = {
  text: 0,
  rodata: 8 * SZ_2M,
  ro_after_init: 8 * SZ_2M,
  data: 8 * SZ_2M,
};
/**
 * The clean after a free. Linux's execmem_cache_clean work releases every empty PMD area right
 * after each free (mm/execmem.c, 6.17): no spare, so a load/unload loop at a block boundary maps
 * and unmaps each time (a CPA flush and a vfree flush per cycle). The old rule here, one spare per
 * pool until shrink() (which the compare workloads never call), kept every block a peak had
 * needed. Chosen: a release delay. A free that empties a block makes it its pool's one spare
 * (the previous one goes), and a spare still empty RELEASE_DELAY_CALLS allocator calls (allocs
 * and frees) later is released: a loop refills its spare within a few calls, an unloaded phase
 * leaves it empty for thousands. Calls are the clock because the simulation has no time.
 * SPARE_MAX_SHARE (a knob, off by default) also releases at once a block that is more than
 * 1/share of all the allocator maps, as Linux does: ftrace-real at scale 1 then maps 1.46x its
 * live bytes instead of 2.20x (its idle 2 MiB trampoline block goes), but every free that empties
 * a pool's only block unmaps it, so a freed object no longer reads as traps, a BPF load/unload
 * loop on one block pays two shootdowns per cycle, and an atomic allocation after it finds no
 * block. Numbers in docs/MEMORY.md.
 */
export const RELEASE_DELAY_CALLS = 1024;
export const SPARE_MAX_SHARE = 0;
/**
 * Trap fill on free, deferred (fills.ts; opt-in, ExecmemOptions.fillOnFree 'deferred'): a free
 * of text or rodata on a backend with write sessions queues its run instead of opening a session
 * of its own; the run stays out of the heap (not free, not live) until its fill is written in the
 * next session: the next update's (a BPF unload is usually followed by a load), a batch's, or one
 * of its own when the queue holds FILL_QUEUE_RUNS runs or its oldest run has waited
 * FILL_DELAY_CALLS allocator calls. A load/unload churn then pays one local flush per load instead
 * of two per program (bpf-real at scale 0.25, x86_64, seed 1: 1,190 flush events instead of 2,196;
 * jit_alloc-2023, which never invalidates, 1,381). Not the default: for up to FILL_DELAY_CALLS
 * calls a stale pointer runs the freed code instead of trapping, which DESIGN.md rule 6 forbids.
 * 64 runs and 64 calls bound what the queue holds (64 BPF programs of 1-2 KiB is a few pages)
 * and for how long; both are far below RELEASE_DELAY_CALLS, so a block emptied by frees is filled
 * before its clean could release it. Numbers in docs/LEAD.md.
 */
export const FILL_QUEUE_RUNS = 64;
export const FILL_DELAY_CALLS = 64;
/** Block look-up granule: the smallest block size, so no two blocks share a look-up slot. */
export const CHUNK_BYTES = SMALL_TIER_BLOCK_BYTES;
/** Address span of one block-directory table (execmem.blockAt): 4096 entries of CHUNK_BYTES. */
export const DIR_SPAN_BYTES = 2 ** 30;
export const DIR_ENTRIES = DIR_SPAN_BYTES / CHUNK_BYTES;
/** Explicit limits. */
export const MAX_ALLOC_BYTES = 256 * 1024 * 1024;
export const MAX_ALIGN_BYTES = SZ_4K;
export const MAX_BLOCKS_PER_POOL = 8192;
