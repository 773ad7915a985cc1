/**
 * Hostile arguments for the `api` fuzz target (api.ts): values no execmem method may accept.
 *
 * Why each kind is here: every one of them broke something once or is the classic way to make a
 * check and a use disagree (issue 16 items 2, 5, 7): NaN, negative, fractional and huge numbers,
 * bigints where numbers go and numbers where bigints go, strings, objects whose valueOf /
 * toString throw (a message built with String(x) runs them), Proxies whose traps throw, a
 * Uint8Array that lies about its length, a subclass, other typed arrays and DataViews, a detached
 * buffer, names that live on Object.prototype. Each generator returns a label for the finding
 * log and the value; the target expects EINVAL for all of them. `reentrant` builds arguments
 * whose getters call back into the allocator, which must refuse them (EBUSY).
 */
import type { Rng } from '../src/base/rng.js';
import type { Execmem } from '../src/execmem/execmem.js';

export interface Arg {
  readonly label: string;
  readonly value: unknown;
}

const throwing = (): unknown => ({
  valueOf() {
    throw new Error('valueOf ran');
  },
  toString() {
    throw new Error('toString ran');
  },
});

const trapping = (): unknown =>
  new Proxy(
    {},
    {
      get() {
        throw new Error('get trap ran');
      },
      getOwnPropertyDescriptor() {
        throw new Error('descriptor trap ran');
      },
      has() {
        throw new Error('has trap ran');
      },
    },
  );

function pick(rng: Rng, table: readonly (readonly [string, () => unknown])[]): Arg {
  const [label, make] = rng.pick(table);
  return { label, value: make() };
}

const NOT_NUMBERS: readonly (readonly [string, () => unknown])[] = [
  ['NaN', () => Number.NaN],
  ['-1', () => -1],
  ['1.5', () => 1.5],
  ['Infinity', () => Number.POSITIVE_INFINITY],
  ['2^60', () => 2 ** 60],
  ["'0x1000'", () => '0x1000'],
  ["'abc'", () => 'abc'],
  ['null', () => null],
  ['undefined', () => undefined],
  ['{}', () => ({})],
  ['[]', () => []],
  ['a symbol', () => Symbol('x')],
  ['true', () => true],
  ['a throwing valueOf', throwing],
  ['a throwing Proxy', trapping],
];

/** Lying, subclassed, foreign and dead byte arrays. */
function lyingLength(): Uint8Array {
  const a = new Uint8Array(256).fill(0x90);
  Object.defineProperty(a, 'length', { value: 1 });
  return a;
}

function detached(): Uint8Array {
  const a = new Uint8Array(16);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

class Shrunk extends Uint8Array {
  override get length(): number {
    return 2;
  }
}

export const hostile = {
  /** Not a 48-bit address as a number (the *Va methods). */
  address: (rng: Rng): Arg => pick(rng, [...NOT_NUMBERS, ['12n', () => 12n], ['2^48', () => 2 ** 48]]),
  /** Not a canonical address as a bigint (alloc, update, free, seal, read). */
  bigAddress: (rng: Rng): Arg =>
    pick(rng, [
      ...NOT_NUMBERS.filter(([l]) => l !== 'undefined'),
      ['12 (a number)', () => 12],
      ['-1n', () => -1n],
      ['2^64n', () => 1n << 64n],
      ['Object(5n)', () => Object(5n)],
    ]),
  size: (rng: Rng): Arg =>
    pick(rng, [
      ...NOT_NUMBERS,
      ['0', () => 0],
      ['64n', () => 64n],
      ["'64'", () => '64'],
      ['2^53', () => 2 ** 53],
    ]),
  type: (rng: Rng): Arg =>
    pick(rng, [
      ["'__proto__'", () => '__proto__'],
      ["'toString'", () => 'toString'],
      ["'constructor'", () => 'constructor'],
      ["'module_init'", () => 'module_init'],
      ['3', () => 3],
      ['null', () => null],
      ['a symbol', () => Symbol('bpf')],
      ['a throwing toString', throwing],
      ['a throwing Proxy', trapping],
    ]),
  ctx: (rng: Rng): Arg =>
    pick(rng, [
      ['5', () => 5],
      ["'atomic'", () => 'atomic'],
      ['null', () => null],
      ['[]', () => []],
      ["{ atomic: 'yes' }", () => ({ atomic: 'yes' })],
      ['{ atomic: 1 }', () => ({ atomic: 1 })],
      ['{ alignBytes: 3 }', () => ({ alignBytes: 3 })],
      ['{ alignBytes: 0 }', () => ({ alignBytes: 0 })],
      ['{ alignBytes: 8192 }', () => ({ alignBytes: 8192 })],
      ["{ alignBytes: '64' }", () => ({ alignBytes: '64' })],
      ['{ alignBytes: 64n }', () => ({ alignBytes: 64n })],
      ['a throwing Proxy', trapping],
      [
        'a throwing getter',
        () => ({
          get alignBytes(): number {
            throw new Error('getter ran');
          },
        }),
      ],
    ]),
  options: (rng: Rng): Arg =>
    pick(rng, [
      ["'all'", () => 'all'],
      ['null', () => null],
      ['{ keepSpare: 1 }', () => ({ keepSpare: 1 })],
      ["{ keepSpare: 'no' }", () => ({ keepSpare: 'no' })],
      ['a throwing Proxy', trapping],
    ]),
  bytes: (rng: Rng): Arg =>
    pick(rng, [
      ['a Uint8Array with a lying length', lyingLength],
      ['a subclass with a shrunk length', () => new Shrunk(64)],
      ['a Proxy of a Uint8Array', () => new Proxy(new Uint8Array(8), {})],
      ['a throwing Proxy', trapping],
      ['a Uint16Array', () => new Uint16Array(4)],
      ['a Uint8ClampedArray', () => new Uint8ClampedArray(4)],
      ['a DataView', () => new DataView(new ArrayBuffer(4))],
      ['a detached Uint8Array', detached],
      ['an empty Uint8Array', () => new Uint8Array(0)],
      ['[1, 2]', () => [1, 2]],
      ["'ab'", () => 'ab'],
      ['null', () => null],
      ['an ArrayBuffer', () => new ArrayBuffer(4)],
    ]),
};

/**
 * An argument whose getter calls back into `em`; the call must be refused with EBUSY. `bytes`:
 * a Uint8Array subclass whose length getter calls back (for update); `options`: an object or a
 * Proxy whose getters or get trap call back (for alloc's context and shrink's options).
 */
export function reentrant(rng: Rng, em: Execmem, va: number, shape: 'bytes' | 'options'): Arg {
  const calls: readonly (readonly [string, () => unknown])[] = [
    ['free', () => em.freeVa(va)],
    ['alloc', () => em.allocVa('bpf', 64)],
    ['update', () => em.updateVa(va, Uint8Array.of(1))],
    ['sizeOf', () => em.sizeOfVa(va)],
    ['batch', () => em.batch(() => em.freeVa(va))],
    ['shrink', () => em.shrink()],
  ];
  const [what, call] = rng.pick(calls);
  if (shape === 'bytes') {
    class CallsBack extends Uint8Array {
      override get length(): number {
        call();
        return super.length;
      }
    }
    return { label: `a Uint8Array whose length getter calls ${what}`, value: new CallsBack(8) };
  }
  if (rng.next() < 0.5) {
    return {
      label: `an object whose getters call ${what}`,
      value: {
        get atomic(): boolean {
          call();
          return false;
        },
        get alignBytes(): number {
          call();
          return 64;
        },
        get keepSpare(): boolean {
          call();
          return true;
        },
      },
    };
  }
  return {
    label: `a Proxy whose get trap calls ${what}`,
    value: new Proxy(
      {},
      {
        get() {
          call();
          return undefined;
        },
      },
    ),
  };
}
