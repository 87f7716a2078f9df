// Where the authority reads the time. Injected (FleetServices.open's `clock`), so that tests of
// expiry, grace periods, token lifetimes and renewal timing move time instead of waiting for it.
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };
