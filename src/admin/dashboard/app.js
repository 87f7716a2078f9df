// The dashboard's entry module: log in from /login#<token>, then route client-side between pages.
import { ApiError, loadSession, login, logout, session } from "./api.js";
import { h, notice, replace } from "./dom.js";
import { PAGES, devicePage } from "./pages.js";

const main = document.getElementById("main");

/** The token from `fleetpki operator login` arrives in the fragment: never sent to the server, removed at once. */
async function loginPage() {
  // The token is base64url: nothing to decode; anything else is refused by the server like a wrong token.
  const token = location.hash.slice(1);
  history.replaceState(null, "", "/login");
  if (!token) {
    replace(
      main,
      h("h1", {}, "Log in"),
      h("p", {}, "Run ", h("code", {}, "fleetpki operator login NAME"), " on the fleet's machine and open the link it prints."),
      h("p", { class: "muted" }, "The link is valid for 10 minutes and only once. An operator certificate (PKCS#12) works too."),
    );
    return;
  }
  replace(main, h("p", { class: "muted" }, "Logging in…"));
  try {
    await login(token);
    await navigate("/", { replace: true });
  } catch (e) {
    const why = e instanceof ApiError && e.status === 401 ? "The login link is invalid, expired or already used." : e.message;
    replace(
      main,
      h("h1", {}, "Log in"),
      notice(why, "error"),
      h("p", {}, "Ask for a new link: ", h("code", {}, "fleetpki operator login NAME")),
    );
  }
}

function header() {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  const me = session();
  nav.hidden = me === null;
  for (const a of nav.querySelectorAll("a")) {
    const path = a.getAttribute("href");
    a.classList.toggle("current", path === "/" ? location.pathname === "/" : location.pathname.startsWith(path));
  }
  if (!me) return replace(who);
  replace(
    who,
    h("span", { id: "operator", "data-role": me.role }, `${me.operator} (${me.role})`),
    me.via === "session" ? h("button", { id: "logout", on: { click: async () => (await logout(), navigate("/login")) } }, "Log out") : null,
  );
}

async function render() {
  const path = location.pathname;
  if (path === "/login") {
    header();
    return loginPage();
  }
  if (session() === null) await loadSession().catch(() => undefined);
  header();
  if (session() === null) {
    replace(
      main,
      h("h1", {}, "Not logged in"),
      h("p", {}, "Run ", h("code", {}, "fleetpki operator login NAME"), " and open the link it prints."),
    );
    return;
  }
  replace(main, h("p", { class: "muted" }, "Loading…"));
  const device = /^\/devices\/([a-z0-9][a-z0-9._-]{0,62})$/.exec(path);
  const page = device ? () => devicePage(device[1]) : (PAGES[path] ?? (async () => [h("h1", {}, "Not found")]));
  try {
    const nodes = await page();
    if (location.pathname === path) replace(main, nodes);
  } catch (e) {
    replace(main, notice(e.message, "error"));
  }
}

export async function navigate(path, { replace: swap = false } = {}) {
  if (swap) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  await render();
}

// Links marked data-link stay in the page (no reload, the session state stays in memory).
document.addEventListener("click", (event) => {
  const a = event.target instanceof Element ? event.target.closest("a[data-link]") : null;
  if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  void navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => void render());
void render();
