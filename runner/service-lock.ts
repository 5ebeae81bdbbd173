/**
 * One lock per service for the steps that touch its live container.
 *
 * A swap, the rollback of a swap the control plane refused, and the removal
 * of a service's leftovers all rename, stop and remove the same few
 * containers (`-stable`, `-previous`). The control plane runs one build per
 * service, but a refused deployment's rollback can meet the next
 * deployment's swap; each such step takes the lock so neither sees the other
 * halfway.
 */

const tails = new Map<string, Promise<unknown>>();

/**
 * Runs `action` once every earlier action for `serviceId` has settled, and
 * before any later one starts. Docker names are per engine, so the lock is
 * per process: a runner is the only one touching its services' containers.
 */
export function withServiceLock<T>(
  serviceId: string,
  action: () => Promise<T>,
): Promise<T> {
  const previous = tails.get(serviceId) ?? Promise.resolve();
  const result = previous.then(action, action);
  // The next action waits for this one, failed or not.
  const tail = result.catch(() => undefined);
  tails.set(serviceId, tail);
  void tail.then(() => {
    if (tails.get(serviceId) === tail) tails.delete(serviceId);
  });
  return result;
}
