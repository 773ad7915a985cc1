/**
 * A fresh x86-64 machine, one design, the ftrace consumer and a module loader wired to it: what
 * every ftrace test starts from.
 */
import { Ftrace } from '../../src/consumers/ftrace/index.js';
import { ModuleLoader } from '../../src/consumers/modules/loader.js';
import type { KernelSymbols } from '../../src/consumers/modules/symbols.js';
import { createMachine, type Machine } from '../../src/machine/machine.js';
import { type InstrumentedAllocator, policyByName } from '../../src/policies/index.js';
import { ftraceKernelSymbols, ftraceModuleElf } from './ftrace-module.js';

export interface Rig {
  machine: Machine;
  allocator: InstrumentedAllocator;
  ft: Ftrace;
  loader: ModuleLoader;
  kernel: KernelSymbols;
}

export function rig(policy: string, kernelAt: (m: Machine) => KernelSymbols): Rig {
  const machine = createMachine({ seed: 1 });
  const allocator = policyByName(policy).create(machine, 1);
  const kernel = kernelAt(machine);
  const ft = new Ftrace({ allocator, machine, kernel });
  return {
    machine,
    allocator,
    ft,
    loader: new ModuleLoader({ allocator: ft.loaderAllocator, kernel }),
    kernel,
  };
}

export const kaslr = (m: Machine) => m.kernelTextStart - m.arch.layout.kernelImage.textStart;
export const testKernel = (m: Machine): KernelSymbols => ftraceKernelSymbols().withKaslrOffset(kaslr(m));

export function loadTest(r: Rig, name: string, functions = 4): void {
  r.ft.loadModule(r.loader, ftraceModuleElf(name, { functions }), name);
  r.ft.initModule(r.loader, name);
}
