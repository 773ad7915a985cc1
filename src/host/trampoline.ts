/**
 * One tiny stub that calls any JIT function: `stub(fn, a1, ..., a5)` tail-calls `fn(a1, ..., a5)`.
 *
 * Why: making a JS callable for an address costs a koffi.decode per address, about 5 us here
 * against 30 ns for the call itself, and in koffi 3.3.4 a worker terminated inside koffi.decode
 * aborts the whole process (call.ts). With the stub, a thread decodes once per *signature* (the
 * stub's, with the target address prepended as a uintptr_t) and every function with that signature
 * is called through it: no decode per function, so no window where terminating a worker that is
 * making callables for new code kills the process (after its first use of each signature).
 *
 * The stub, x86-64 System V (psABI section 3.2.3: integer-class arguments in rdi, rsi, rdx, rcx,
 * r8, r9; floating arguments in xmm0-7; the rest on the stack): the target arrives in rdi, so each
 * integer-class argument sits one register later than the target expects. Shift them back and jump
 * (a tail call: the target returns straight to koffi's caller frame, stack untouched):
 *   mov r11, rdi   49 89 fb   (REX.W+B, 89 /r: MOV r/m64, r64; Intel SDM vol. 2B)
 *   mov rdi, rsi   48 89 f7
 *   mov rsi, rdx   48 89 d6
 *   mov rdx, rcx   48 89 ca
 *   mov rcx, r8    4c 89 c1   (REX.W+R)
 *   mov r8, r9     4d 89 c8   (REX.W+R+B)
 *   jmp r11        41 ff e3   (FF /4: JMP r/m64)
 * r11 is a scratch register nobody expects preserved. Floating arguments and stack arguments are
 * where the target expects them already. So a signature qualifies when it has at most five
 * integer-class arguments (six would push the stub's seventh onto the stack), all plain inputs of
 * scalar or pointer type, a scalar or void result (a struct result would add a hidden pointer in
 * rdi) and no variadic part (`al` would count vector registers for the wrong callee). Anything else
 * is decoded per address as before.
 *
 * The stub lives in its own page outside the arena: mapped RW, written, then made RX (never W+X),
 * never written again, unmapped when the arena's owner closes.
 */
import koffi, { type TypeObject } from 'koffi';
import {
  type Libc,
  MAP_ANONYMOUS,
  MAP_PRIVATE,
  memoryView,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
} from './libc.js';

/** The stub, one instruction per row (encodings in the header). */
const STUB: readonly (readonly number[])[] = [
  [0x49, 0x89, 0xfb], // mov r11, rdi
  [0x48, 0x89, 0xf7], // mov rdi, rsi
  [0x48, 0x89, 0xd6], // mov rsi, rdx
  [0x48, 0x89, 0xca], // mov rdx, rcx
  [0x4c, 0x89, 0xc1], // mov rcx, r8
  [0x4d, 0x89, 0xc8], // mov r8, r9
  [0x41, 0xff, 0xe3], // jmp r11
];

export const TRAMPOLINE_CODE = Uint8Array.from(STUB.flat());

const PAGE_BYTES = 4096;
const MAX_INT_ARGS = 5;
const INT_CLASS = new Set([
  'Bool',
  'Int8',
  'UInt8',
  'Int16',
  'Int16S',
  'UInt16',
  'UInt16S',
  'Int32',
  'Int32S',
  'UInt32',
  'UInt32S',
  'Int64',
  'Int64S',
  'UInt64',
  'UInt64S',
  'String',
  'String16',
  'String32',
  'Pointer',
  'Callback',
]);
const FLOAT_CLASS = new Set(['Float32', 'Float64']);

/** Map the stub page; returns its address, or 0 if the kernel refused (callers then decode). */
export function createTrampoline(libc: Libc): number {
  const va = libc.mmap(0, PAGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (va === -1) return 0;
  memoryView(va, TRAMPOLINE_CODE.length).set(TRAMPOLINE_CODE);
  if (libc.mprotect(va, PAGE_BYTES, PROT_READ | PROT_EXEC) !== 0) {
    libc.munmap(va, PAGE_BYTES);
    return 0;
  }
  return va;
}

export function releaseTrampoline(libc: Libc, va: number): void {
  if (va !== 0) libc.munmap(va, PAGE_BYTES);
}

interface ProtoInfo {
  readonly proto: {
    readonly arguments: readonly {
      readonly type: { readonly primitive: string };
      readonly direction: string;
    }[];
    readonly result: { readonly primitive: string };
  };
}

/**
 * The stub's own prototype for a target of type `type` (signature text `signature`), or null when
 * the target's arguments cannot be passed through the stub.
 */
export function trampolineProto(signature: string, type: TypeObject): TypeObject | null {
  if (signature.includes('...')) return null;
  const info = koffi.type(type) as unknown as ProtoInfo;
  const args = info.proto?.arguments;
  const result = info.proto?.result;
  if (args === undefined || result === undefined) return null;
  let ints = 0;
  for (const a of args) {
    if (a.direction !== 'Input') return null;
    if (INT_CLASS.has(a.type.primitive)) ints++;
    else if (!FLOAT_CLASS.has(a.type.primitive)) return null;
  }
  if (ints > MAX_INT_ARGS) return null;
  const r = result.primitive;
  if (r !== 'Void' && !INT_CLASS.has(r) && !FLOAT_CLASS.has(r)) return null;
  return koffi.proto(result as unknown as TypeObject, [
    'uintptr_t',
    ...args.map((a) => a.type as unknown as TypeObject),
  ]);
}
