// Operators, their login links and browser sessions as the authority reads and writes them.
import type { OperatorLoginTable, OperatorSessionTable, OperatorTable } from "../schema.js";

export interface OperatorOperations {
  get(name: string): Promise<OperatorTable | undefined>;
  /** Every operator, removed ones included, by name. */
  list(): Promise<OperatorTable[]>;
  /** Inserts the operator, or makes a removed (or renewed) one active again with this role. */
  put(row: OperatorTable): Promise<void>;
  /** false when no such operator. */
  update(name: string, change: Partial<Pick<OperatorTable, "role" | "status">> & { updated_at: string }): Promise<boolean>;
  /** Active operators with role admin. */
  activeAdmins(): Promise<number>;

  addLogin(row: OperatorLoginTable): Promise<void>;
  /** The login link with this token hash (spent and expired ones included). */
  getLogin(tokenHash: string): Promise<OperatorLoginTable | undefined>;
  /**
   * Spends the login link: marks it used if it is unused and unexpired at `now`, in one statement,
   * so that of two racing redeems only one gets it. Undefined: unknown, spent or expired.
   */
  spendLogin(tokenHash: string, now: string): Promise<OperatorLoginTable | undefined>;

  /** Spends every unused login link of the operator (it was removed); how many. */
  spendLoginsOf(operator: string, now: string): Promise<number>;

  addSession(row: OperatorSessionTable): Promise<void>;
  getSession(secretHash: string): Promise<OperatorSessionTable | undefined>;
  /** Ends the session if it is not ended yet; false when unknown or already ended. */
  endSession(secretHash: string, at: string): Promise<boolean>;
  /** Ends every open session of the operator; how many. */
  endSessionsOf(operator: string, at: string): Promise<number>;
  /** Deletes login links and sessions that expired before `before` (they can never be used again). */
  purgeExpired(before: string): Promise<void>;
}
