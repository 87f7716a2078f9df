// Time for the agent, injectable so tests can run the renewal loop on a fake clock.

export interface Clock {
  now(): number;
  /** Waits ms milliseconds; resolves early (never rejects) when the signal aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      // setTimeout cannot wait longer than 2^31-1 ms; callers re-check the time anyway.
      const timer = setTimeout(done, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
      signal?.addEventListener("abort", done, { once: true });
    }),
};
