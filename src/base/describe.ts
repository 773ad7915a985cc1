/**
 * Describe an untrusted value for an error message without running any of its code.
 *
 * Why: a message built with String(x) or a template literal calls x's toString / valueOf /
 * Symbol.toPrimitive, and a Proxy's traps; a hostile argument could throw from there (turning a
 * typed refusal into an arbitrary exception) or call back into the allocator while it is
 * refusing the call. Only `typeof`, Array.isArray and ArrayBuffer.isView are used on objects:
 * none of them runs user code, not even on a Proxy.
 */

const MAX_STRING_CHARS = 40;

export function describe(value: unknown): string {
  switch (typeof value) {
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value);
    case 'bigint':
      return `${value.toString()}n (a bigint)`;
    case 'string': {
      const shown = value.length > MAX_STRING_CHARS ? `${value.slice(0, MAX_STRING_CHARS)}...` : value;
      return `${JSON.stringify(shown)} (a string)`;
    }
    case 'symbol':
      return 'a symbol';
    case 'function':
      return 'a function';
    default:
      if (value === null) return 'null';
      if (Array.isArray(value)) return 'an array';
      if (ArrayBuffer.isView(value)) return 'a typed array or DataView';
      return 'an object';
  }
}
