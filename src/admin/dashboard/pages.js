// The dashboard's pages. Each returns the nodes of <main>; an endpoint this server does not offer
// (404 not-found) shows as "not available" in its section instead of failing the page.
import { api, attempt, can, failure, items } from "./api.js";
import { navigate } from "./app.js";
import { barChart, timeline } from "./charts.js";
import { badge, confirmDialog, daysLeft, fmtAgo, fmtDate, h, notice, table } from "./dom.js";

const DEVICE_STATES = ["active", "held", "disabled", "revoked", "removed"];
const DEVICE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const DAY = 86400000;

const link = (href, text) => h("a", { href, "data-link": true }, text);
const deviceLink = (id) => link(`/devices/${encodeURIComponent(id)}`, id);
const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : "";
};
const card = (title, ...body) => h("section", { class: "card" }, h("h2", {}, title), ...body);
const yesNo = (v) => (v === true ? badge("yes") : v === false ? badge("no") : h("span", { class: "muted" }, "unknown"));

/** Every page of a list up to `max` items (the counts on the overview are capped, and say so). */
async function collect(path, params, max) {
  const out = [];
  let cursor;
  do {
    const page = await api("GET", path + query({ ...params, cursor, limit: Math.min(500, max) }));
    out.push(...items(page));
    cursor = page?.nextCursor ?? undefined;
  } while (cursor && out.length < max);
  return { items: out.slice(0, max), more: Boolean(cursor) };
}

// ---------------------------------------------------------------------------------------------
async function overview() {
  const now = new Date();
  const sections = [];

  const counts = await Promise.all(
    DEVICE_STATES.map((state) =>
      collect("/api/devices", { state }, 500).then(
        (r) => ({ state, n: r.items.length, more: r.more }),
        (e) => ({ state, error: e }),
      ),
    ),
  );
  const failed = counts.find((c) => c.error);
  sections.push(
    card(
      "Devices by state",
      failed
        ? failure(failed.error, "Device counts")
        : [
            h("p", { class: "big", id: "devices-total" }, `${counts.reduce((a, c) => a + c.n, 0)}${counts.some((c) => c.more) ? "+" : ""}`),
            barChart(
              "Devices by state",
              counts.map((c) => c.state),
              [{ name: "devices", values: counts.map((c) => c.n) }],
            ),
          ],
    ),
  );

  const expiring = await Promise.all(
    ["7d", "30d"].map((w) => attempt("GET", `/api/certificates/expiring?within=${w}`, "Expiring certificates")),
  );
  const soon = expiring[1].data ? items(expiring[1].data) : [];
  sections.push(
    card(
      "Certificates expiring",
      expiring[0].error ??
        h(
          "div",
          { class: "pair" },
          h(
            "div",
            {},
            h("p", { class: "big", id: "expiring-7d" }, items(expiring[0].data).length),
            h("p", { class: "muted" }, "within 7 days"),
          ),
          h("div", {}, h("p", { class: "big", id: "expiring-30d" }, soon.length), h("p", { class: "muted" }, "within 30 days")),
        ),
    ),
  );

  // Enrollments, renewals and denials per day over two weeks, bucketed here from the audit log.
  const from = new Date(Math.floor(now.getTime() / DAY) * DAY - 13 * DAY);
  const days = Array.from({ length: 14 }, (_, i) => new Date(from.getTime() + i * DAY));
  const bucket = (rows, pick) => {
    const values = days.map(() => 0);
    for (const r of rows) {
      const i = Math.floor((new Date(r.at).getTime() - from.getTime()) / DAY);
      if (i >= 0 && i < values.length) values[i] += pick(r);
    }
    return values;
  };
  let activity;
  try {
    const [issued, denied] = await Promise.all([
      collect("/api/audit", { action: "certificate.issue", from: from.toISOString() }, 2000),
      collect("/api/audit", { action: "access.deny", from: from.toISOString() }, 2000),
    ]);
    const device = issued.items.filter((r) => (r.details?.kind ?? "device") === "device");
    activity = barChart(
      "Enrollments, renewals and access denials per day",
      days.map((d) => d.toISOString().slice(5, 10)),
      [
        { name: "enrollments", values: bucket(device, (r) => (r.details?.renews ? 0 : 1)) },
        { name: "renewals", values: bucket(device, (r) => (r.details?.renews ? 1 : 0)) },
        { name: "access denials", values: bucket(denied.items, (r) => Number(r.details?.count ?? 1) || 1) },
      ],
    );
  } catch (e) {
    activity = failure(e, "Activity");
  }
  sections.push(card("Enrollments, renewals and denials (14 days)", activity));

  sections.push(
    card(
      "Expiry timeline (30 days)",
      expiring[1].error ??
        timeline(
          "Certificates ending within 30 days",
          now,
          new Date(now.getTime() + 30 * DAY),
          soon.map((c) => ({
            at: new Date(c.notAfter),
            label: `${c.kind ?? "certificate"} ${c.subject ?? c.subjectId ?? c.serial}: ${fmtDate(c.notAfter)}`,
            cls: new Date(c.notAfter).getTime() - now.getTime() < 7 * DAY ? "s2" : "s0",
          })),
        ),
    ),
  );
  return [h("h1", {}, "Fleet overview"), h("div", { class: "cards" }, sections)];
}

// ---------------------------------------------------------------------------------------------
async function devices() {
  const params = new URLSearchParams(location.search);
  const filters = { q: params.get("q") ?? "", group: params.get("group") ?? "", state: params.get("state") ?? "" };
  const results = h("div", { id: "device-results" });
  const input = (name, label, attrs = {}) => h("label", {}, label, h("input", { name, value: filters[name], ...attrs }));
  const form = h(
    "form",
    {
      class: "filters",
      id: "device-search",
      on: {
        submit: (e) => {
          e.preventDefault();
          const data = new FormData(form);
          void navigate(`/devices${query(Object.fromEntries(data))}`);
        },
      },
    },
    input("q", "Search", { type: "search", placeholder: "device id", autofocus: true }),
    input("group", "Group"),
    h(
      "label",
      {},
      "State",
      h(
        "select",
        { name: "state" },
        h("option", { value: "" }, "any"),
        DEVICE_STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s)),
      ),
    ),
    h("button", { class: "primary", type: "submit" }, "Search"),
  );

  const columns = [
    { title: "Device", cell: (d) => deviceLink(d.id) },
    { title: "Group", cell: (d) => d.group ?? "—" },
    { title: "State", cell: (d) => badge(d.status) },
    {
      title: "Certificate ends",
      cell: (d) => {
        const c = d.certificate ?? d.newestCertificate;
        return c ? fmtDate(c.notAfter) : "—";
      },
    },
    { title: "Last seen", cell: (d) => fmtAgo(d.lastSeen) },
    { title: "Connected", cell: (d) => yesNo(d.connected) },
  ];
  const rows = [];
  const load = async (cursor) => {
    try {
      const page = await api("GET", `/api/devices${query({ ...filters, cursor, limit: 50 })}`);
      rows.push(...items(page));
      const more = page?.nextCursor ? h("button", { id: "more", on: { click: () => void load(page.nextCursor) } }, "More") : null;
      results.replaceChildren(table(columns, rows, "No device matches."), more ?? "");
    } catch (e) {
      results.replaceChildren(failure(e, "The device list"));
      // Without the list, an exact id still opens its page.
      if (filters.q && DEVICE_ID.test(filters.q)) results.append(h("p", {}, "Open ", deviceLink(filters.q), " by its exact id."));
    }
  };
  await load(undefined);
  return [h("h1", {}, "Devices"), form, results];
}

// ---------------------------------------------------------------------------------------------
const DEVICE_ACTIONS = [
  { verb: "revoke", label: "Revoke", when: (d) => d.status !== "revoked" && d.status !== "removed",
    ask: (id) => `Revoke ${id}? Every certificate of the device is revoked and it can never enroll again.` },
  { verb: "hold", label: "Hold", when: (d) => d.status === "active",
    ask: (id) => `Put ${id} on hold? Its certificates stop working until released.` },
  { verb: "unhold", label: "Release hold", when: (d) => d.status === "held", ask: (id) => `Release ${id} from hold?` },
]; // prettier-ignore

export async function devicePage(id) {
  let device;
  try {
    device = await api("GET", `/api/devices/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e.status === 404) return [h("h1", {}, id), notice(`No device "${id}".`, "error")];
    throw e;
  }
  const result = h("div", { id: "action-result" });
  let connected = device.connected;
  if (connected === undefined) {
    const sessions = await attempt("GET", "/api/gateway/sessions", "Gateway sessions");
    if (sessions.data) connected = items(sessions.data).some((s) => s.kind === "device" && s.name === id);
  }
  const actions = can("operator")
    ? DEVICE_ACTIONS.filter((a) => a.when(device)).map((a) =>
        h(
          "button",
          {
            id: `device-${a.verb}`,
            class: a.verb === "revoke" ? "danger" : "",
            on: {
              click: async () => {
                if (!(await confirmDialog(a.ask(id)))) return;
                try {
                  await api("POST", `/api/devices/${encodeURIComponent(id)}/${a.verb}`, {});
                  await navigate(location.pathname, { replace: true });
                } catch (e) {
                  result.replaceChildren(failure(e, a.label));
                }
              },
            },
          },
          a.label,
        ),
      )
    : [];

  let events = device.recentEvents;
  let eventsNode;
  if (events === undefined) {
    const r = await attempt("GET", `/api/audit${query({ subject: `device:${id}`, limit: 20 })}`, "Recent events");
    eventsNode = r.error;
    events = r.data ? items(r.data) : [];
  }
  return [
    h("h1", {}, `Device ${device.id} `, badge(device.status)),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "State"), h("dd", { id: "device-status" }, device.status),
      h("dt", {}, "Group"), h("dd", {}, device.group ?? "—"),
      h("dt", {}, "Labels"), h("dd", {}, Object.entries(device.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "—"),
      h("dt", {}, "Connected now"), h("dd", { id: "device-connected", "data-connected": String(connected ?? "unknown") }, yesNo(connected)),
      device.lastSeen !== undefined ? [h("dt", {}, "Last seen"), h("dd", {}, fmtAgo(device.lastSeen))] : null,
      h("dt", {}, "Added"), h("dd", {}, fmtDate(device.createdAt)),
    ), // prettier-ignore
    actions.length ? h("div", { class: "actions", id: "device-actions" }, actions) : null,
    result,
    h("h2", {}, "Certificates"),
    table(
      [
        { title: "Serial", class: "mono", cell: (c) => c.serial },
        { title: "Issuer", cell: (c) => c.issuer },
        { title: "Status", cell: (c) => badge(c.status) },
        { title: "Valid from", cell: (c) => fmtDate(c.notBefore) },
        { title: "Until", cell: (c) => `${fmtDate(c.notAfter)} (${daysLeft(c.notAfter)})` },
      ],
      device.certificates ?? [],
      "No certificate yet.",
    ),
    h("h2", {}, "Recent events"),
    eventsNode ?? auditTable(events),
  ];
}

/** Details as key=value pairs: readable, and long values (hashes) wrap instead of widening the table. */
const details = (d) =>
  Object.entries(d ?? {})
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join("  ");

function auditTable(rows) {
  const columns = [
    { title: "#", cell: (r) => r.seq ?? "" },
    { title: "When", cell: (r) => fmtDate(r.at) },
    { title: "Actor", cell: (r) => r.actor },
    { title: "Action", cell: (r) => r.action },
    { title: "Subject", cell: (r) => r.subject ?? "" },
    { title: "Details", class: "mono details", cell: (r) => details(r.details) },
  ];
  // A device's own events all name it: no subject column there.
  return table(rows.some((r) => r.subject) ? columns : columns.filter((c) => c.title !== "Subject"), rows, "No events.");
}

// ---------------------------------------------------------------------------------------------
async function approvals() {
  const r = await attempt("GET", "/api/approvals", "Pending approvals");
  if (r.error) return [h("h1", {}, "Pending approvals"), r.error];
  const out = h("div");
  // Approval names the device and the key's fingerprint the robot printed; deny refuses the device's waiting requests.
  const decide = (req, verb) => async () => {
    const what =
      verb === "approve" ? `Approve the key ${req.keyFingerprint} of ${req.deviceId}?` : `Deny the enrollment of ${req.deviceId}?`;
    if (!(await confirmDialog(what))) return;
    try {
      const body = verb === "approve" ? { fingerprint: req.keyFingerprint } : {};
      await api("POST", `/api/approvals/${encodeURIComponent(req.deviceId)}/${verb}`, body);
      await navigate("/approvals", { replace: true });
    } catch (e) {
      out.replaceChildren(failure(e, verb));
    }
  };
  const buttons = (q) =>
    can("operator")
      ? [
          q.keyFingerprint ? h("button", { on: { click: decide(q, "approve") } }, "Approve") : null,
          " ",
          h("button", { on: { click: decide(q, "deny") } }, "Deny"),
        ]
      : "";
  return [
    h("h1", {}, "Pending approvals"),
    out,
    table(
      [
        { title: "Device", cell: (q) => deviceLink(q.deviceId) },
        { title: "Key fingerprint", class: "mono", cell: (q) => q.keyFingerprint ?? "—" },
        { title: "Source", cell: (q) => `${q.source ?? ""}${q.address ? ` (${q.address})` : ""}` },
        { title: "Asked", cell: (q) => fmtDate(q.createdAt) },
        { title: "Expires", cell: (q) => fmtDate(q.expiresAt) },
        { title: "", cell: buttons },
      ],
      items(r.data),
      "No enrollment waits for approval.",
    ),
  ];
}

async function cas() {
  const r = await attempt("GET", "/api/cas", "CAs");
  if (r.error) return [h("h1", {}, "Certificate authorities"), r.error];
  return [
    h("h1", {}, "Certificate authorities"),
    table(
      [
        { title: "CA", cell: (c) => c.id ?? c.name },
        { title: "Kind", cell: (c) => c.kind ?? c.role ?? "—" },
        { title: "Status", cell: (c) => badge(c.status ?? "active") },
        { title: "Subject", cell: (c) => c.subject ?? "—" },
        { title: "Expires", cell: (c) => (c.notAfter ? `${fmtDate(c.notAfter)} (${daysLeft(c.notAfter)})` : "—") },
      ],
      items(r.data),
    ),
  ];
}

async function audit() {
  const params = new URLSearchParams(location.search);
  const filters = Object.fromEntries(["actor", "action", "subject", "from", "to"].map((k) => [k, params.get(k) ?? ""]));
  const form = h(
    "form",
    {
      class: "filters",
      on: {
        submit: (e) => {
          e.preventDefault();
          void navigate(`/audit${query(Object.fromEntries(new FormData(form)))}`);
        },
      },
    },
    Object.keys(filters).map((k) =>
      h("label", {}, k, h("input", { name: k, value: filters[k], placeholder: k === "from" || k === "to" ? "2026-01-31T00:00:00Z" : "" })),
    ),
    h("button", { class: "primary", type: "submit" }, "Filter"),
  );
  const [verify, rows] = await Promise.all([
    attempt("GET", "/api/audit/verify", "Integrity"),
    attempt("GET", `/api/audit${query({ ...filters, limit: 100 })}`, "The audit log"),
  ]);
  let integrity = verify.error;
  if (verify.data) {
    const ok = verify.data.ok ?? verify.data.valid ?? (Array.isArray(verify.data.problems) ? verify.data.problems.length === 0 : undefined);
    const problems = verify.data.problems ?? verify.data.errors ?? [];
    integrity = h(
      "div",
      { class: `notice ${ok ? "" : "error"}`, id: "audit-integrity" },
      ok ? badge("ok") : badge("bad"),
      " ",
      ok ? `chain intact (${verify.data.rows ?? verify.data.length ?? "all"} rows checked)` : "the audit log does not verify",
      problems.length
        ? h(
            "ul",
            {},
            problems.slice(0, 20).map((p) => h("li", {}, typeof p === "string" ? p : JSON.stringify(p))),
          )
        : null,
    );
  }
  return [h("h1", {}, "Audit log"), integrity, form, rows.error ?? auditTable(items(rows.data))];
}

const policyError = (e) => (typeof e === "string" ? e : `line ${e.line ?? "?"}: ${e.message ?? JSON.stringify(e)}`);

async function policy() {
  const r = await attempt("GET", "/api/policy", "The policy");
  const result = h("div", { id: "policy-result" });
  const form = h(
    "form",
    {
      class: "filters",
      id: "policy-test",
      on: {
        submit: async (e) => {
          e.preventDefault();
          const f = Object.fromEntries(new FormData(form));
          const body = { action: f.action, topic: f.topic };
          if (f.kind === "operator") Object.assign(body, { operator: f.name, role: f.role });
          else body[f.kind] = f.name;
          try {
            const d = await api("POST", "/api/policy/test", body);
            const allowed = d.allowed ?? d.decision === "allow";
            result.replaceChildren(
              h("div", { class: "notice", id: "policy-decision", "data-allowed": String(allowed) },
                badge(allowed ? "yes" : "denied"), " ", allowed ? "allowed" : "denied",
                d.rule ? ` by rule "${d.rule}"` : " (no rule matches: default deny)", d.mode ? ` (mode ${d.mode})` : "",
                d.reason ? h("div", { class: "muted" }, d.reason) : null),
            ); // prettier-ignore
          } catch (err) {
            result.replaceChildren(failure(err, "Test"));
          }
        },
      },
    },
    h(
      "label",
      {},
      "Identity",
      h(
        "select",
        { name: "kind" },
        ["device", "service", "operator"].map((k) => h("option", { value: k }, k)),
      ),
    ),
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h(
      "label",
      {},
      "Role (operator)",
      h(
        "select",
        { name: "role" },
        ["viewer", "operator", "admin"].map((k) => h("option", { value: k }, k)),
      ),
    ),
    h(
      "label",
      {},
      "Action",
      h(
        "select",
        { name: "action" },
        ["publish", "subscribe"].map((k) => h("option", { value: k }, k)),
      ),
    ),
    h("label", {}, "Topic", h("input", { name: "topic", required: true, placeholder: "fleet/robot-1/telemetry" })),
    h("button", { class: "primary", type: "submit" }, "Test"),
  );
  const view = r.error ?? [
    r.data.valid === false
      ? h("div", { class: "notice error" }, "The policy file does not validate:",
          h("ul", {}, (r.data.errors ?? []).map((e) => h("li", {}, policyError(e)))))
      : h("div", { class: "notice" }, badge("ok"), " valid"),
    h("pre", { class: "yaml" }, r.data.yaml ?? ""),
  ]; // prettier-ignore
  return [h("h1", {}, "Access policy"), h("h2", {}, "Test a decision"), form, result, h("h2", {}, "policy.yaml"), view];
}

async function gateway() {
  const r = await attempt("GET", "/api/gateway/sessions", "Gateway sessions");
  if (r.error) return [h("h1", {}, "Gateway sessions"), r.error];
  const out = h("div");
  const kick = (s) => async () => {
    if (!(await confirmDialog(`Disconnect ${s.id}? It may connect again unless revoked.`))) return;
    try {
      await api("DELETE", `/api/gateway/sessions/${encodeURIComponent(s.id)}`);
      await navigate("/gateway", { replace: true });
    } catch (e) {
      out.replaceChildren(failure(e, "Kick"));
    }
  };
  return [
    h("h1", {}, "Live gateway sessions"),
    out,
    table(
      [
        { title: "Client id", class: "mono", cell: (s) => (s.kind === "device" ? deviceLink(s.name) : s.id) },
        { title: "Kind", cell: (s) => s.kind },
        { title: "Address", class: "mono", cell: (s) => s.address },
        { title: "Since", cell: (s) => fmtAgo(s.since) },
        { title: "In / out", cell: (s) => `${s.messagesIn ?? 0} / ${s.messagesOut ?? 0}` },
        { title: "Subscriptions", cell: (s) => s.subscriptions ?? 0 },
        { title: "", cell: (s) => (can("operator") ? h("button", { on: { click: kick(s) } }, "Kick") : "") },
      ],
      items(r.data),
      "Nobody is connected.",
    ),
  ];
}

export const PAGES = {
  "/": overview,
  "/devices": devices,
  "/approvals": approvals,
  "/cas": cas,
  "/audit": audit,
  "/policy": policy,
  "/gateway": gateway,
};
