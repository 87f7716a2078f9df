import type { Command } from "commander";
import { listGatewaySessions } from "../../gateway/sessions.js";
import { dirOption } from "../context.js";
import { printJson, printTable, say } from "../output.js";

export function registerGateway(program: Command): void {
  const gateway = program.command("gateway").description("the MQTT gateway run by `fleetpki serve`");
  dirOption(gateway.command("sessions").description("who is connected now, across the gateways running on this fleet directory"))
    .option("--json", "machine-readable output")
    .action((opts) => {
      const files = listGatewaySessions(opts.dir);
      const sessions = files.flatMap((f) => f.sessions.map((s) => ({ ...s, gatewayPid: f.pid })));
      if (opts.json) return printJson(sessions);
      if (files.length === 0) return say("no gateway is running on this fleet directory");
      printTable(
        sessions.map((s) => ({
          id: s.id,
          kind: s.kind,
          address: s.address,
          since: s.since,
          "msgs in": String(s.messagesIn),
          "msgs out": String(s.messagesOut),
          gateway: String(s.gatewayPid),
        })),
        ["id", "kind", "address", "since", "msgs in", "msgs out", "gateway"],
      );
    });
}
