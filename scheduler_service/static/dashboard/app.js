// The dashboard: polls the public REST API, renders runs, alarms, charts, clips, learners
// and the audit log, and sets targets through PUT /runs/{run}/targets (If-Match guarded).

import { api, ApiError, getOperator, getToken, setOperator, setToken } from "./api.js";
import { fill, formatCount, formatPercent, h, legend, lineChart, percentDigits } from "./chart.js";
import {
  auditSummary,
  clipRows,
  filterRows,
  groupRows,
  historyBudget,
  liveRow,
  rowSeries,
  sortRows,
} from "./model.js";

const PALETTE = [
  "#2563eb", "#ea580c", "#16a34a", "#dc2626", "#9333ea", "#0891b2",
  "#ca8a04", "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488",
];
const MAX_TOP_K = PALETTE.length;
const params = new URLSearchParams(location.search);
const POLL_MS = Math.max(250, Number(params.get("poll")) || 2000);
const AUDIT_ROWS = 50;

const ALARMS = {
  effective_clips: {
    label: "Effective clips",
    value: (v) => v.toFixed(2),
    rule: (a) => `exp(H(u)); fires below ${a.threshold.toFixed(2)}`,
  },
  top1_share: {
    label: "Top-1 usage share",
    value: (v) => formatPercent(v, 1),
    rule: (a) => `fires above ${formatPercent(a.threshold, 0)}`,
  },
  max_target_gap: {
    label: "Largest |u − u*|",
    value: (v) => v.toFixed(3),
    rule: (a) => `fires above ${a.threshold.toFixed(3)}`,
  },
  starved_clips: {
    label: "Starved clips",
    value: (v) => String(Math.round(v)),
    rule: () => "no episode in the usage window",
  },
  stalled_clips: {
    label: "Stalled clips",
    value: (v) => String(Math.round(v)),
    rule: () => "success flat over recent updates",
  },
};

const ui = {
  runs: [],
  runName: null,
  state: null,
  history: [],
  lastUpdate: 0,
  audit: [],
  lastAuditId: 0,
  view: "clip",
  topK: 8,
  search: "",
  sortKey: null, // null: natural order for small runs, |u - u*| for large ones
  sortDir: "desc",
  tableRows: 25,
  runSearch: "",
  colors: new Map(),
  timer: null,
  busy: false,
  needsToken: false,
};

const $ = (id) => document.getElementById(id);

// ----- polling ----------------------------------------------------------------------

function hashRun() {
  const match = /(?:^#|&)run=([^&]*)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function selectRun(name) {
  if (name === ui.runName) return;
  ui.runName = name;
  ui.state = null;
  ui.history = [];
  ui.lastUpdate = 0;
  ui.audit = [];
  ui.lastAuditId = 0;
  ui.colors = new Map();
  resetTargetRows();
}

async function poll() {
  clearTimeout(ui.timer);
  if (ui.busy || ui.needsToken) return;
  ui.busy = true;
  try {
    ui.runs = (await api.runs()).runs;
    const wanted = hashRun();
    const names = new Set(ui.runs.map((r) => r.name));
    if (wanted && names.has(wanted)) selectRun(wanted);
    else if (!ui.runName || !names.has(ui.runName)) selectRun(ui.runs.length ? ui.runs[0].name : null);
    renderRuns();
    if (ui.runName) await refreshRun();
    render();
    setLive("live", `live · updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      ui.needsToken = true;
      setLive("error", "a token is needed");
      openTokenDialog();
    } else {
      setLive("error", `${err.message} · retrying`);
    }
  } finally {
    ui.busy = false;
    if (!ui.needsToken) ui.timer = setTimeout(poll, document.hidden ? POLL_MS * 5 : POLL_MS);
  }
}

async function refreshRun() {
  const name = ui.runName;
  const summary = ui.runs.find((r) => r.name === name);
  const clipCount = summary ? summary.clip_count : 1;
  const budget = historyBudget(clipCount);
  if (ui.history.length === 0 && summary) {
    ui.lastUpdate = Math.max(0, summary.totals.updates - budget);
  }
  const [state, audit] = await Promise.all([api.run(name), api.audit(name, ui.lastAuditId)]);
  const rows = [];
  for (let page = 0; page < 10; page++) {
    const limit = Math.min(budget, 1000);
    const since = rows.length ? rows[rows.length - 1].update : ui.lastUpdate;
    const chunk = (await api.history(name, since, limit)).updates;
    rows.push(...chunk);
    if (chunk.length < limit) break;
  }
  if (name !== ui.runName) return; // the operator switched runs meanwhile
  ui.state = state;
  if (rows.length) {
    ui.history = ui.history.concat(rows).slice(-budget);
    ui.lastUpdate = rows[rows.length - 1].update;
  }
  if (audit.entries.length) {
    ui.audit = ui.audit.concat(audit.entries).slice(-AUDIT_ROWS);
    ui.lastAuditId = audit.entries[audit.entries.length - 1].id;
  }
}

function setLive(state, text) {
  $("live").dataset.state = state;
  $("live-text").textContent = text;
}

// ----- rendering --------------------------------------------------------------------

function render() {
  const hasRun = Boolean(ui.runName && ui.state);
  $("run-view").hidden = !hasRun;
  $("empty").hidden = hasRun;
  if (!hasRun) {
    $("empty-text").textContent = ui.runs.length
      ? "Loading the run…"
      : "No runs yet. Create one with POST /runs; it shows up here.";
    return;
  }
  const rows = tableRows();
  const shown = rows.slice(0, Math.min(ui.topK, MAX_TOP_K));
  const colors = assignColors(shown.map((r) => r.key));
  renderHeader();
  renderAlarms();
  renderCharts(shown, colors);
  renderTable(rows, colors);
  renderLearners(shown, colors);
  renderAudit();
  renderFormMeta();
}

function renderRuns() {
  const query = ui.runSearch.trim().toLowerCase();
  const list = $("run-list");
  fill(list, 
    ...ui.runs
      .filter((r) => !query || r.name.toLowerCase().includes(query))
      .map((r) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: `#run=${encodeURIComponent(r.name)}`, class: r.name === ui.runName ? "active" : null },
            h("div", { class: "run-title" }, h("span", {}, r.name), r.paused ? h("span", { class: "chip paused" }, "paused") : null),
            h(
              "div",
              { class: "run-meta" },
              `${r.clip_count} clips · ${r.strategy} · ${formatCount(r.totals.episodes)} episodes`,
            ),
          ),
        ),
      ),
  );
  if (!list.children.length) list.append(h("li", { class: "muted" }, ui.runs.length ? "no match" : "no runs yet"));
}

function renderHeader() {
  const st = ui.state;
  $("run-name").textContent = st.name;
  fill($("run-chips"), 
    h("span", { class: `chip ${st.paused ? "paused" : "active"}` }, st.paused ? "paused" : "adapting"),
    h("span", { class: "chip" }, `strategy: ${st.strategy.kind}`),
    h("span", { class: "chip" }, `aggregation: ${st.aggregation.kind}`),
    st.preset ? h("span", { class: "chip" }, `preset: ${st.preset}`) : null,
    h("span", { class: "chip" }, `state v${st.state_version}`),
    st.frozen.clip_probs ? h("span", { class: "chip paused" }, "p frozen") : null,
    st.frozen.reward_weights ? h("span", { class: "chip paused" }, "w frozen") : null,
  );
  const stale = st.learners.filter((l) => l.stale).length;
  const totals = [
    ["Clips", String(st.clips.length)],
    ["Episodes", formatCount(st.totals.episodes)],
    ["Env steps", formatCount(st.totals.steps)],
    ["Updates", String(st.totals.updates)],
    ["Learners", stale ? `${st.learners.length - stale} + ${stale} stale` : String(st.learners.length)],
  ];
  fill($("run-totals"), ...totals.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
}

function renderAlarms() {
  const alarms = ui.state.alarms ?? [];
  fill($("alarms"), 
    ...alarms.map((alarm) => {
      const info = ALARMS[alarm.name] ?? {
        label: alarm.name,
        value: (v) => String(Number(v.toPrecision(3))),
        rule: (a) => `threshold ${a.threshold}`,
      };
      const clips = alarm.clips ?? [];
      const listed = clips.slice(0, 3).join(", ") + (clips.length > 3 ? ` +${clips.length - 3}` : "");
      return h(
        "div",
        {
          class: `alarm${alarm.firing ? " firing" : ""}`,
          dataset: { alarm: alarm.name },
          title: clips.length ? clips.join(", ") : null,
        },
        h(
          "div",
          { class: "alarm-head" },
          h("span", { class: "alarm-name" }, info.label),
          h("span", { class: "badge" }, alarm.firing ? "FIRING" : "OK"),
        ),
        h("div", { class: "alarm-value" }, info.value(alarm.value)),
        h("div", { class: "alarm-threshold" }, info.rule(alarm)),
        alarm.firing && clips.length ? h("div", { class: "alarm-clips" }, listed) : null,
      );
    }),
  );
}

function tableRows() {
  const clips = clipRows(ui.state);
  const rows = ui.view === "group" ? groupRows(clips) : clips;
  const small = clips.length <= MAX_TOP_K;
  const filtered = filterRows(rows, ui.search);
  if (ui.sortKey === null) {
    return small ? filtered : sortRows(filtered, "gap", "desc");
  }
  return sortRows(filtered, ui.sortKey, ui.sortDir);
}

function assignColors(keys) {
  const result = new Map();
  const used = new Set();
  for (const key of keys) {
    const color = ui.colors.get(key);
    if (color && !used.has(color)) {
      result.set(key, color);
      used.add(color);
    }
  }
  for (const key of keys) {
    if (result.has(key)) continue;
    const color = PALETTE.find((c) => !used.has(c)) ?? PALETTE[used.size % PALETTE.length];
    result.set(key, color);
    used.add(color);
    ui.colors.set(key, color);
  }
  return result;
}

function renderCharts(shown, colors) {
  const live = liveRow(ui.state);
  const history = ui.history;
  const percent = (v, step) => formatPercent(v, percentDigits(step));
  const common = { xLabel: "env steps", xFormat: formatCount, yFormat: percent, yMin: 0 };
  const empty = shown.length ? "waiting for outcomes…" : `nothing matches “${ui.search}”`;
  const usageLabel = ui.state.strategy.usage_measure === "steps" ? "share of env steps" : "share of episodes";
  const seriesOf = (field, extra = {}) =>
    shown.map((row) => ({
      key: row.key,
      label: row.label,
      color: colors.get(row.key),
      points: rowSeries(row, history, field, live),
      ...extra,
    }));
  const charts = [
    ["chart-usage", [...seriesOf("usage"), ...seriesOf("target_usage", { dashed: true })], usageLabel],
    ["chart-probs", seriesOf("clip_probs"), "probability"],
    ["chart-weights", seriesOf("reward_weights"), "weight"],
    ["chart-success", seriesOf("success"), "success", { yMax: 1 }],
  ];
  for (const [id, series, yLabel, extra] of charts) {
    fill($(id).querySelector(".chart-body"), 
      lineChart({ ...common, ...(extra ?? {}), series, yLabel, title: yLabel, empty }),
    );
  }
  const total = ui.view === "group" ? groupRows(clipRows(ui.state)).length : ui.state.clips.length;
  const note = shown.length < total
    ? `showing ${shown.length} of ${total} ${ui.view === "group" ? "groups" : "clips"} (the first rows of the table)`
    : null;
  fill($("chart-legend"), 
    legend(shown.map((r) => ({ label: r.label, color: colors.get(r.key) })), note),
  );
}

const COLUMNS = [
  { key: "label", title: () => (ui.view === "group" ? "Group" : "Clip") },
  { key: "group", title: () => (ui.view === "group" ? "Clips" : "Group") },
  { key: "target", title: () => "Target u*", num: true },
  { key: "usage", title: () => "Usage u (bar) vs u* (tick)" },
  { key: "gap", title: () => "u − u*", num: true },
  { key: "prob", title: () => "p", num: true },
  { key: "weight", title: () => "w", num: true },
  { key: "success", title: () => "Success" },
  { key: "episodes", title: () => "Episodes", num: true },
  { key: "meanLength", title: () => "Mean length" },
  { key: "returnMean", title: () => "Return", num: true },
];

function renderTable(rows, colors) {
  const table = $("clip-table");
  const headRow = h(
    "tr",
    {},
    COLUMNS.map((col) => {
      const sorted = ui.sortKey === col.key;
      return h(
        "th",
        {
          class: `sortable${col.num ? " num" : ""}${sorted ? " sorted" : ""}${sorted && ui.sortDir === "asc" ? " asc" : ""}`,
          onclick: () => {
            if (ui.sortKey === col.key) ui.sortDir = ui.sortDir === "desc" ? "asc" : "desc";
            else {
              ui.sortKey = col.key;
              ui.sortDir = col.key === "label" || col.key === "group" ? "asc" : "desc";
            }
            render();
          },
        },
        col.title(),
      );
    }),
  );
  fill(table.tHead, headRow);
  const limit = ui.tableRows;
  const maxScale = Math.max(0.05, ...rows.slice(0, limit).flatMap((r) => [r.usage, r.target]));
  const maxLength = Math.max(1, ...rows.slice(0, limit).map((r) => r.meanLength ?? 0));
  const pct = (v) => formatPercent(v, 1);
  fill(table.tBodies[0], 
    ...rows.slice(0, limit).map((row) => {
      const color = colors.get(row.key);
      const gapClass = Math.abs(row.gap) < 0.005 ? "muted" : row.gap > 0 ? "gap-pos" : "gap-neg";
      return h(
        "tr",
        { dataset: { key: row.key } },
        h(
          "td",
          { class: "name", title: row.label },
          h("span", { class: "swatch", style: `--c: ${color ?? "transparent"}` }),
          h("button", { type: "button", title: "set this target", onclick: () => prefillTarget(row) }, row.label),
        ),
        h("td", { class: ui.view === "group" ? "num" : "muted" }, ui.view === "group" ? String(row.count) : row.group ?? "—"),
        h("td", { class: "num" }, pct(row.target)),
        h(
          "td",
          {},
          h(
            "span",
            { class: "bar" },
            h("span", { class: "fill", style: `width: ${Math.min(100, (row.usage / maxScale) * 100)}%` }),
            h("span", { class: "mark", style: `left: calc(${Math.min(100, (row.target / maxScale) * 100)}% - 1px)` }),
          ),
          pct(row.usage),
        ),
        h("td", { class: `num ${gapClass}` }, `${row.gap >= 0 ? "+" : "−"}${formatPercent(Math.abs(row.gap), 1)}`),
        h("td", { class: "num" }, pct(row.prob)),
        h("td", { class: "num" }, pct(row.weight)),
        h(
          "td",
          {},
          row.success === null
            ? h("span", { class: "muted" }, "—")
            : [
                h("span", { class: "bar" }, h("span", { class: "fill success", style: `width: ${row.success * 100}%` })),
                formatPercent(row.success, 0),
              ],
        ),
        h("td", { class: "num" }, formatCount(row.episodes)),
        h(
          "td",
          {},
          row.meanLength === null
            ? h("span", { class: "muted" }, "—")
            : [
                h("span", { class: "bar" }, h("span", { class: "fill length", style: `width: ${(row.meanLength / maxLength) * 100}%` })),
                `${row.meanLength.toFixed(0)} steps`,
              ],
        ),
        h("td", { class: "num" }, row.returnMean === null ? "—" : row.returnMean.toFixed(1)),
      );
    }),
  );
  const total = ui.view === "group" ? groupRows(clipRows(ui.state)).length : ui.state.clips.length;
  $("table-title").textContent = `${ui.view === "group" ? "Groups" : "Clips"} (${total})`;
  const parts = [];
  if (rows.length < total) parts.push(`${rows.length} match “${ui.search}”`);
  if (rows.length > limit) parts.push(`showing the first ${limit}`);
  $("table-note").textContent = parts.join(" · ");
}

function formatTime(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

function renderLearners(shown, colors) {
  const names = ui.state.clips.map((c) => c.name);
  const body = $("learner-table").tBodies[0];
  if (!ui.state.learners.length) {
    fill(body, h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no learner has posted outcomes yet")));
    return;
  }
  fill(
    body,
    ...ui.state.learners.map((learner) => {
      // one segment per row drawn in the charts (same colours), the rest in grey
      const segments = shown.map((row) => ({
        label: row.label,
        share: row.members.reduce((acc, i) => acc + (learner.usage[i] ?? 0), 0),
        color: colors.get(row.key),
      }));
      const rest = Math.max(0, 1 - segments.reduce((acc, seg) => acc + seg.share, 0));
      let best = 0;
      learner.usage.forEach((u, i) => {
        if (u > learner.usage[best]) best = i;
      });
      const topShare = learner.usage[best] ?? 0;
      const top = topShare > 0 ? `top: ${names[best]} ${formatPercent(topShare, topShare < 0.1 ? 1 : 0)}` : "";
      const strip = h(
        "span",
        {
          class: "usage-strip",
          title: segments
            .filter((seg) => seg.share > 0)
            .map((seg) => `${seg.label} ${formatPercent(seg.share, 1)}`)
            .concat(rest > 0.0005 ? [`others ${formatPercent(rest, 1)}`] : [])
            .join(", "),
        },
        segments.map((seg) => h("span", { style: `width: ${seg.share * 100}%; background: ${seg.color}` })),
        rest > 0.0005 ? h("span", { style: `width: ${rest * 100}%; background: #cbd5e1` }) : null,
      );
      return h(
        "tr",
        {},
        h("td", { class: "name" }, learner.learner_id),
        h(
          "td",
          {},
          ago(learner.last_seen),
          learner.stale ? h("span", { class: "stale" }, " · stale") : null,
        ),
        h("td", { class: "num" }, formatCount(learner.episodes)),
        h("td", { class: "num" }, formatCount(learner.steps)),
        h("td", {}, learner.episodes ? strip : null, h("span", { class: "muted" }, ` ${top}`)),
      );
    }),
  );
}

function renderAudit() {
  const body = $("audit-table").tBodies[0];
  const entries = [...ui.audit].reverse();
  if (!entries.length) {
    fill(body, h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no operator action yet")));
    return;
  }
  fill(body, 
    ...entries.map((e) =>
      h(
        "tr",
        { dataset: { action: e.action } },
        h("td", {}, formatTime(e.time)),
        h("td", {}, e.actor),
        h("td", {}, e.action),
        h("td", { class: "change" }, auditSummary(e, 3)),
        h("td", { class: "num" }, String(e.state_version)),
      ),
    ),
  );
}

// ----- targets form -----------------------------------------------------------------

function targetMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function targetNames() {
  if (!ui.state) return [];
  if (targetMode() === "clip") return ui.state.clips.map((c) => c.name);
  return [...new Set(ui.state.clips.map((c) => c.group).filter((g) => g !== null))].sort();
}

function renderFormMeta() {
  const names = targetNames();
  const datalist = $("target-names");
  if (datalist.dataset.signature !== `${ui.runName}|${targetMode()}|${names.length}`) {
    fill(datalist, ...names.map((n) => h("option", { value: n })));
    datalist.dataset.signature = `${ui.runName}|${targetMode()}|${names.length}`;
  }
  const groupRadio = document.querySelector('input[name="mode"][value="group"]');
  groupRadio.disabled = !ui.state.clips.some((c) => c.group !== null);
  $("targets-version").textContent = `applies to state v${ui.state.state_version}`;
}

function addTargetRow(name = "", share = "") {
  const row = h(
    "div",
    { class: "target-row" },
    h("input", {
      name: "name",
      list: "target-names",
      placeholder: targetMode() === "clip" ? "clip name" : "group name",
      "aria-label": "name",
    }),
    h("input", { name: "share", type: "number", step: "any", min: "0", placeholder: "share", "aria-label": "share" }),
    h("button", { type: "button", class: "icon", title: "remove", onclick: () => {
      row.remove();
      if (!$("target-rows").children.length) addTargetRow();
    } }, "×"),
  );
  row.querySelector('[name="name"]').value = name;
  row.querySelector('[name="share"]').value = share;
  $("target-rows").append(row);
  return row;
}

function resetTargetRows() {
  fill($("target-rows"));
  addTargetRow();
}

function prefillTarget(row) {
  const mode = ui.view === "group" ? "group" : "clip";
  if (mode === "group" && row.group === null) return;
  const radio = document.querySelector(`input[name="mode"][value="${mode}"]`);
  if (!radio.checked) {
    radio.checked = true;
    resetTargetRows();
  }
  const empty = [...$("target-rows").children].find((r) => !r.querySelector('[name="name"]').value);
  const target = empty ?? addTargetRow();
  target.querySelector('[name="name"]').value = mode === "group" ? row.group : row.label;
  const share = target.querySelector('[name="share"]');
  share.value = Number(row.target.toFixed(4));
  share.focus();
  share.select();
  if (ui.state) renderFormMeta();
}

function setFormStatus(kind, text) {
  const el = $("targets-status");
  el.className = `form-status ${kind}`;
  el.textContent = text;
}

async function submitTargets(event) {
  event.preventDefault();
  if (!ui.state) return;
  const mode = targetMode();
  const known = new Set(targetNames());
  const values = {};
  for (const row of $("target-rows").children) {
    const name = row.querySelector('[name="name"]').value.trim();
    const raw = row.querySelector('[name="share"]').value.trim();
    if (!name && !raw) continue;
    const share = Number(raw);
    if (!known.has(name)) return setFormStatus("error", `unknown ${mode}: “${name}”`);
    if (raw === "" || !Number.isFinite(share) || share < 0) {
      return setFormStatus("error", `the share of “${name}” must be a non-negative number`);
    }
    values[name] = share;
  }
  if (!Object.keys(values).length) return setFormStatus("error", "name at least one clip and its share");
  const body = mode === "clip" ? { target_usage: values } : { target_usage_by_group: values };
  const version = ui.state.state_version;
  $("apply-targets").disabled = true;
  setFormStatus("", "applying…");
  try {
    const state = await api.setTargets(ui.runName, body, version);
    const applied = Object.keys(values)
      .map((n) => {
        const value = mode === "clip"
          ? state.clips.find((c) => c.name === n).target_usage
          : state.clips.filter((c) => c.group === n).reduce((acc, c) => acc + c.target_usage, 0);
        return `${n} ${formatPercent(value, 1)}`;
      })
      .join(", ");
    setFormStatus("ok", `Applied at state v${state.state_version}: ${applied}`);
    resetTargetRows();
  } catch (err) {
    if (err instanceof ApiError && err.status === 412) {
      const current = err.body && err.body.state_version;
      setFormStatus("error", `The run changed since you loaded it (now v${current}). Check the table and apply again.`);
    } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      setFormStatus("error", "Setting targets needs the write token.");
      openTokenDialog();
    } else {
      setFormStatus("error", err.message);
    }
  } finally {
    $("apply-targets").disabled = false;
    poll();
  }
}

// ----- token dialog -----------------------------------------------------------------

function openTokenDialog() {
  const dialog = $("token-dialog");
  if (dialog.open) return;
  $("token-input").value = getToken();
  dialog.showModal();
}

function onTokenDialogClose() {
  const choice = $("token-dialog").returnValue;
  if (choice === "save") setToken($("token-input").value.trim());
  if (choice === "clear") setToken("");
  if (choice === "save" || choice === "clear") {
    ui.needsToken = false;
    poll();
  }
}

// ----- wiring -----------------------------------------------------------------------

function init() {
  $("run-search").addEventListener("input", (e) => {
    ui.runSearch = e.target.value;
    renderRuns();
  });
  $("clip-search").addEventListener("input", (e) => {
    ui.search = e.target.value;
    if (ui.state) render();
  });
  $("view-mode").addEventListener("change", (e) => {
    ui.view = e.target.value;
    if (ui.sortKey === "label" || ui.sortKey === "group") ui.sortKey = null;
    if (ui.state) render();
  });
  $("top-k").max = String(MAX_TOP_K);
  $("top-k").addEventListener("input", (e) => {
    const k = Math.round(Number(e.target.value));
    if (k >= 1) {
      ui.topK = Math.min(MAX_TOP_K, k);
      if (ui.state) render();
    }
  });
  $("table-rows").addEventListener("change", (e) => {
    ui.tableRows = Number(e.target.value);
    if (ui.state) render();
  });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      resetTargetRows();
      if (ui.state) renderFormMeta();
    });
  }
  $("add-target-row").addEventListener("click", () => addTargetRow());
  $("targets-form").addEventListener("submit", submitTargets);
  const operator = $("operator");
  operator.value = getOperator();
  operator.addEventListener("change", () => setOperator(operator.value.trim()));
  $("token-button").addEventListener("click", openTokenDialog);
  $("token-dialog").addEventListener("close", onTokenDialogClose);
  window.addEventListener("hashchange", () => poll());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  resetTargetRows();
  poll();
}

init();
