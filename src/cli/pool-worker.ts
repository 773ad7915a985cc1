/**
 * A thread of the compare pool (pool.ts): runs one (plan, design) at a time on a fresh machine
 * and posts the result back. Progress is posted at most every PROGRESS_MS, so a long replay costs
 * a handful of messages, not one per thousand events. The worker keeps the last plan it was sent
 * (PoolTask: a plan crosses to a worker once, not once per design).
 */

import { parentPort } from 'node:worker_threads';
import { type ComparePlan, runPlannedPolicy } from '../metrics/compare.js';
import { decodePlan, type PoolReply, type PoolTask } from './pool.js';

const PROGRESS_MS = 100;

if (parentPort !== null) {
  const port = parentPort;
  const post = (m: PoolReply) => port.postMessage(m);
  let held: { planId: number; plan: ComparePlan } | null = null;
  port.on('message', (task: PoolTask) => {
    let lastMs = 0;
    try {
      if (task.plan !== null) held = { planId: task.planId, plan: decodePlan(task.plan) };
      if (held === null || held.planId !== task.planId)
        throw new Error(`pool worker: run of plan ${task.planId} without that plan`);
      const run = runPlannedPolicy(held.plan, task.policyIndex, (p) => {
        const now = Date.now();
        if (now - lastMs < PROGRESS_MS) return;
        lastMs = now;
        post({ kind: 'progress', id: task.id, eventsDone: p.eventsDone, eventsTotal: p.eventsTotal });
      });
      post({ kind: 'result', id: task.id, run });
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      post({ kind: 'error', id: task.id, message: error.message, stack: error.stack ?? error.message });
    }
  });
}
