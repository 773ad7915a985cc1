/**
 * A thread of the compare pool (pool.ts): takes the plans it is sent, then claims runs from the
 * shared counter until none is left, each on a fresh machine, and posts each result back.
 * Progress is posted at most every PROGRESS_MS, so a long replay costs a handful of messages, not
 * one per thousand events. A plan is parsed when its first run is claimed and dropped when the
 * claims move past it (runs of one plan are claimed one after another).
 */

import { parentPort } from 'node:worker_threads';
import { type ComparePlan, runPlannedPolicy } from '../metrics/compare.js';
import { decodePlan, type PoolClaim, type PoolMessage, type PoolReply } from './pool.js';

const PROGRESS_MS = 100;

if (parentPort !== null) {
  const port = parentPort;
  const post = (m: PoolReply) => port.postMessage(m);
  /** Plans received and not parsed yet, and who waits for one. */
  const texts = new Map<number, string>();
  const waiting = new Map<number, () => void>();
  let held: { planId: number; plan: ComparePlan } | null = null;

  const planOf = async (planId: number): Promise<ComparePlan> => {
    if (held?.planId === planId) return held.plan;
    let text = texts.get(planId);
    while (text === undefined) {
      await new Promise<void>((resolve) => waiting.set(planId, resolve));
      text = texts.get(planId);
    }
    texts.delete(planId);
    held = { planId, plan: decodePlan(text) };
    return held.plan;
  };

  const runClaims = async (counter: Int32Array, claims: readonly PoolClaim[]): Promise<void> => {
    for (;;) {
      const k = Atomics.add(counter, 0, 1);
      if (k >= claims.length) return;
      const { id, planId, policyIndex } = claims[k];
      let lastMs = 0;
      try {
        const plan = await planOf(planId);
        const run = runPlannedPolicy(plan, policyIndex, (p) => {
          const now = Date.now();
          if (now - lastMs < PROGRESS_MS) return;
          lastMs = now;
          post({ kind: 'progress', id, eventsDone: p.eventsDone, eventsTotal: p.eventsTotal });
        });
        post({ kind: 'result', id, run });
      } catch (e) {
        const error = e instanceof Error ? e : new Error(String(e));
        post({ kind: 'error', id, message: error.message, stack: error.stack ?? error.message });
        return;
      }
      // Let plans sent meanwhile in before the next claim.
      await new Promise((resolve) => setImmediate(resolve));
    }
  };

  port.on('message', (m: PoolMessage) => {
    if (m.kind === 'plan') {
      texts.set(m.planId, m.text);
      waiting.get(m.planId)?.();
      waiting.delete(m.planId);
    } else void runClaims(new Int32Array(m.counter), m.claims);
  });
}
