/**
 * The README's library example, runnable as written: `npm run build && node dist/examples/quickstart.js`.
 * It imports the package by its own name (package.json "exports"), as a user would.
 */
import { createMachine, Execmem, formatStats, SimBackend } from 'execmem';

const machine = createMachine({ arch: 'x86_64', memoryBytes: 16 * 2 ** 30, cpus: 4, kaslr: true, seed: 1 });
const em = new Execmem(new SimBackend(machine));

const prog = em.alloc('bpf', 300); // bigint address: read-only, executable, trap-filled
em.update(prog, Uint8Array.of(0x31, 0xc0, 0xc3)); // xor eax,eax; ret -- written via text_poke
console.log(`bpf program at 0x${prog.toString(16)}: ${Buffer.from(em.read(prog, 4)).toString('hex')}`);

const data = em.alloc('module_data', 4096); // RW, never executable, on its own blocks
em.update(data, new TextEncoder().encode('hello')); // a plain write for data types

em.free(prog); // size recovered internally; the range is re-filled with 0xcc
console.log(`after free: ${Buffer.from(em.read(prog, 4)).toString('hex')}`);
em.free(data);

console.log(formatStats(em.stats()));
console.log(`W^X violations: ${machine.wxViolationCount()}`);
