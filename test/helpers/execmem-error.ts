/** The `code` of the ExecmemError a call throws, or 'no error'; any other exception propagates. */
import { ExecmemError } from '../../src/execmem/errors.js';

export function execmemErrorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ExecmemError) return e.code;
    throw e;
  }
  return 'no error';
}
