// A clock tests move by hand, for FleetServices/startFleetServer's `clock` option.
import type { Clock } from "../../src/authority/clock.js";

export class ManualClock implements Clock {
  private ms: number;

  constructor(start: Date | number = Date.now()) {
    this.ms = typeof start === "number" ? start : start.getTime();
  }

  now(): Date {
    return new Date(this.ms);
  }

  /** Moves time forward by `ms` milliseconds. */
  advance(ms: number): void {
    this.ms += ms;
  }

  set(at: Date | number): void {
    this.ms = typeof at === "number" ? at : at.getTime();
  }
}
