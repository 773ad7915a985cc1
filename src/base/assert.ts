/**
 * Invariant assertions.
 *
 * Why: TigerBeetle-style. An assertion states something that must be true if the code is
 * correct; it is not input validation (bad input gets a typed error of its layer, with state
 * unchanged). A failed assertion means a bug, so it throws an `AssertionError` that nobody
 * should catch.
 */
export class AssertionError extends Error {
  override name = 'AssertionError';
}

export function assert(condition: unknown, message = 'assertion failed'): asserts condition {
  if (!condition) throw new AssertionError(message);
}
