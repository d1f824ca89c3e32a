"use strict";
/* Rollouts: the hub's plugin rollouts (`relay plugin rollout`), newest
 * first, with their progress, and the devices of the one selected. They are
 * not on a device's event stream, so the list is read again every 2 s while
 * one runs. Uses the main script's helpers (api, el, badge, timeCell...),
 * called only after it has loaded. */

let rollouts = [];
let rolloutShown = null;   // id whose devices are shown
let rolloutTimer = null;

const ROLLOUT_DONE = ["succeeded", "failed", "timed_out", "cancelled"];

async function loadRollouts() {
  clearTimeout(rolloutTimer);
  if (!token) { rollouts = []; renderRollouts(); return; }
  try {
    const data = await api("GET", "/v1/rollouts");
    rollouts = (data.rollouts || []).sort((a, b) => b.created_at - a.created_at);
    renderRollouts();
    if (rolloutShown) await loadRolloutDevices(rolloutShown);
  } catch (e) {
    showError(e, "listing rollouts");
  }
  if (rollouts.some((r) => r.state === "running")) rolloutTimer = setTimeout(loadRollouts, 2000);
}

function rolloutProgress(counts) {
  const c = counts || {};
  const total = Object.values(c).reduce((a, b) => a + b, 0);
  const done = ROLLOUT_DONE.reduce((a, k) => a + (c[k] || 0), 0);
  const failed = (c.failed || 0) + (c.timed_out || 0);
  return done + "/" + total + (failed ? " · " + failed + " failed" : "") +
    (c.running ? " · " + c.running + " running" : "");
}

function renderRollouts() {
  const body = $("rollouts").tBodies[0];
  body.replaceChildren(...rollouts.map((r) => {
    const c = r.counts || {};
    const row = el("tr", { "data-rollout": r.id, "data-state": r.state,
        "data-succeeded": String(c.succeeded || 0),
        "data-failed": String((c.failed || 0) + (c.timed_out || 0)), tabIndex: 0 },
      el("td", { class: "mono nowrap", title: r.id }, short(r.id, 9)),
      el("td", { class: "mono" }, r.plugin + "@" + r.version),
      el("td", { title: r.reason || "" }, badge(r.state)),
      el("td", { class: "nowrap", "data-field": "progress" }, rolloutProgress(c)),
      timeCell(r.created_at));
    if (r.id === rolloutShown) row.classList.add("selected");
    const open = () => { rolloutShown = rolloutShown === r.id ? null : r.id; renderRollouts(); loadRolloutDevices(rolloutShown); };
    row.addEventListener("click", open);
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    return row;
  }));
  $("rollouts-empty").textContent = token ? "No rollouts: start one with relay plugin rollout." :
    "Enter a token to list the rollouts.";
  $("rollouts-empty").classList.toggle("hidden", rollouts.length > 0);
  if (!rollouts.some((r) => r.id === rolloutShown)) {
    rolloutShown = null;
    $("rollout-detail").replaceChildren();
  }
}

async function loadRolloutDevices(id) {
  const detail = $("rollout-detail");
  if (!id) { detail.replaceChildren(); return; }
  try {
    const r = await api("GET", "/v1/rollouts/" + encodeURIComponent(id));
    if (id !== rolloutShown) return;
    const abort = el("button", { type: "button", class: "quiet" }, "Abort");
    abort.addEventListener("click", () => abortRollout(id));
    detail.replaceChildren(
      el("h3", {}, r.plugin + "@" + r.version + " · " + r.rate_per_min + "/min, abort at " +
        r.abort_failed_percent + "% failed after " + r.min_executed),
      r.reason ? el("p", { class: "muted" }, r.reason) : "",
      r.state === "running" ? abort : "",
      el("table", { id: "rollout-devices" },
        el("thead", {}, el("tr", {}, el("th", {}, "Device"), el("th", {}, "State"),
          el("th", {}, "Code"), el("th", {}, "Finished"))),
        el("tbody", {}, ...(r.devices || []).map((t) => el("tr", { "data-device": t.device, "data-state": t.state },
          el("td", { class: "mono" }, t.device),
          el("td", {}, badge(t.state)),
          el("td", { class: "mono" }, t.code || ""),
          t.finished_at ? timeCell(t.finished_at) : el("td", {}, ""))))));
  } catch (e) {
    showError(e, "reading rollout " + id);
  }
}

async function abortRollout(id) {
  if (!confirm("Abort rollout " + id + "? Devices not started yet get nothing.")) return;
  try {
    await api("POST", "/v1/rollouts/" + encodeURIComponent(id) + "/abort");
  } catch (e) {
    showError(e, "aborting rollout " + id);
  }
  loadRollouts();
}
