/**
 * A runnable example: JIT real x86-64 functions into this Node.js process through execmem's host
 * backend, call them, and look at what the kernel sees.
 *
 * Why an example and not only tests: it shows the whole path a user takes (open the backend,
 * allocate by type, write through the one update path, call, free) in a page of code, and prints
 * the facts a reader should check for themselves: which mode the probe chose and why, the
 * /proc/self/maps lines (an RX view and, in dualmap mode, a separate RW alias; never W and X in
 * one mapping), and the trap fill (0xcc) that replaces freed code. It imports only the package's
 * public API, by the package's own name, as a user's program would.
 *
 * Run (x86-64 Linux): `npm run build && node dist/examples/host-jit.js [auto|dualmap|mprotect]`
 */
import { Execmem, genLinear, genSum, type HostMode, openHost, readMaps } from 'execmem';

const MiB = 1024 * 1024;

function main(mode: HostMode): void {
  const host = openHost({ mode, textReserveBytes: 64 * MiB, dataReserveBytes: 8 * MiB });
  try {
    console.log(`mode: ${host.mode}\nwhy:  ${host.modeReason}`);
    console.log(`huge pages for blocks: ${host.report().thpForBlocks.why}`);
    const em = new Execmem(host);

    // int f(int a, int b) { return a * 3 + b + 7; } and a loop summing an int32 buffer.
    const linear = em.alloc('bpf', 16);
    const sum = em.alloc('bpf', 32);
    em.batch(() => {
      em.update(linear, genLinear(3, 7));
      em.update(sum, genSum());
    });
    const f = host.fn(linear, 'int (int, int)');
    const s = host.fn(sum, 'int (const int32_t *, int)');
    console.log(`f(5, 2) = ${f(5, 2)} (expected 24)`);
    const data = Int32Array.from({ length: 1000 }, (_, i) => i);
    console.log(`sum(0..999) = ${s(data, data.length)} (expected 499500)`);

    console.log('\nour mappings in /proc/self/maps:');
    const families = host.report().families;
    const ours = readMaps().filter((m) =>
      families.some((fam) => {
        const starts = [fam.viewBase, fam.aliasBase].filter((x): x is string => x !== null);
        return starts.some((b) => {
          const base = Number.parseInt(b, 16);
          return m.start < base + fam.capacityBytes && m.end > base && m.perms[0] !== '-';
        });
      }),
    );
    for (const m of ours) console.log(`  ${m.start.toString(16)}-${m.end.toString(16)} ${m.perms} ${m.name}`);
    const wx = ours.filter((m) => m.perms[1] === 'w' && m.perms[2] === 'x');
    console.log(`mappings both writable and executable: ${wx.length}`);

    em.free(linear);
    // read() inspects mapped memory, freed ranges included: the trap fill replaced the code.
    const after = [...em.read(linear, 8)].map((b) => b.toString(16)).join(' ');
    console.log(
      `\nafter free, the first bytes of f read: ${after} (int3 traps; calling f now would SIGTRAP)`,
    );
    em.free(sum);
    em.shrink({ keepSpare: false });
    console.log(`stats: ${JSON.stringify(em.stats().counters)}`);
  } finally {
    host.close();
  }
}

const arg = (process.argv[2] ?? 'auto') as HostMode;
main(arg);
