// Pure data shaping for the dashboard: per-clip and per-group rows from a run state,
// search, sorting, and chart series from the controller history. No DOM here.

export const UNGROUPED = "(no group)";

/** One table row per clip of a run state (GET /runs/{run}). */
export function clipRows(runState) {
  return runState.clips.map((clip) => ({
    key: `clip:${clip.id}`,
    label: clip.name,
    group: clip.group,
    members: [clip.id],
    target: clip.target_usage,
    usage: clip.usage,
    prob: clip.clip_prob,
    weight: clip.reward_weight,
    success: clip.success,
    episodes: clip.episodes,
    steps: clip.steps,
    meanLength: clip.episodes > 0 ? clip.steps / clip.episodes : null,
    returnMean: clip.return_mean,
    gap: clip.usage - clip.target_usage,
    count: 1,
  }));
}

/** Rows rolled up per group: shares summed, success weighted by episodes. */
export function groupRows(rows) {
  const groups = new Map();
  for (const row of rows) {
    const name = row.group ?? UNGROUPED;
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(row);
  }
  return [...groups.entries()].map(([name, members]) => {
    const sum = (f) => members.reduce((acc, r) => acc + (r[f] ?? 0), 0);
    const episodes = sum("episodes");
    const steps = sum("steps");
    const played = members.filter((r) => r.success !== null && r.episodes > 0);
    const playedEpisodes = played.reduce((acc, r) => acc + r.episodes, 0);
    const success = playedEpisodes > 0
      ? played.reduce((acc, r) => acc + r.success * r.episodes, 0) / playedEpisodes
      : null;
    const returns = members.filter((r) => r.returnMean !== null && r.episodes > 0);
    const returnMean = returns.length
      ? returns.reduce((acc, r) => acc + r.returnMean * r.episodes, 0) /
        returns.reduce((acc, r) => acc + r.episodes, 0)
      : null;
    const target = sum("target");
    const usage = sum("usage");
    return {
      key: `group:${name}`,
      label: name,
      group: name === UNGROUPED ? null : name,
      members: members.flatMap((r) => r.members),
      target,
      usage,
      prob: sum("prob"),
      weight: sum("weight"),
      success,
      episodes,
      steps,
      meanLength: episodes > 0 ? steps / episodes : null,
      returnMean,
      gap: usage - target,
      count: members.length,
    };
  });
}

/** Rows whose name (or group) contains `query`, case-insensitive. */
export function filterRows(rows, query) {
  const q = query.trim().toLowerCase();
  if (!q) return rows;
  return rows.filter(
    (r) => r.label.toLowerCase().includes(q) || (r.group ?? "").toLowerCase().includes(q),
  );
}

const SORT_VALUES = {
  gap: (r) => Math.abs(r.gap),
  label: (r) => r.label.toLowerCase(),
  group: (r) => (r.group ?? "").toLowerCase(),
  target: (r) => r.target,
  usage: (r) => r.usage,
  prob: (r) => r.prob,
  weight: (r) => r.weight,
  success: (r) => r.success ?? -1,
  episodes: (r) => r.episodes,
  meanLength: (r) => r.meanLength ?? -1,
  returnMean: (r) => r.returnMean ?? -Infinity,
};

export const SORT_KEYS = Object.keys(SORT_VALUES);

/** Rows sorted by `key` ("desc" or "asc"), ties broken by name. */
export function sortRows(rows, key, dir) {
  const value = SORT_VALUES[key] ?? SORT_VALUES.gap;
  const sign = dir === "asc" ? 1 : -1;
  return [...rows].sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    if (va < vb) return -sign;
    if (va > vb) return sign;
    return a.label.localeCompare(b.label);
  });
}

/**
 * Chart points for one row: [[total_steps, value], ...] over history rows, then the live
 * state (if it is newer). `field` is a history array (usage, target_usage, clip_probs,
 * reward_weights, success); group rows sum their members (success: mean of the known).
 */
export function rowSeries(row, history, field, live) {
  const pick = (values) => {
    if (!values) return null;
    if (row.members.length === 1) return values[row.members[0]] ?? null;
    if (field === "success") {
      const known = row.members.map((i) => values[i]).filter((v) => v !== null && v !== undefined);
      return known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
    }
    return row.members.reduce((acc, i) => acc + (values[i] ?? 0), 0);
  };
  const points = history.map((u) => [u.total_steps, pick(u[field])]);
  if (live && (history.length === 0 || live.steps > history[history.length - 1].total_steps)) {
    points.push([live.steps, pick(live[field])]);
  }
  return points;
}

/** The live point of a run state in history form (arrays in clip id order). */
export function liveRow(runState) {
  return {
    steps: runState.totals.steps,
    usage: runState.clips.map((c) => c.usage),
    target_usage: runState.clips.map((c) => c.target_usage),
    clip_probs: runState.clips.map((c) => c.clip_prob),
    reward_weights: runState.clips.map((c) => c.reward_weight),
    success: runState.clips.map((c) => c.success),
  };
}

/** How many controller updates of history to keep in memory for a run of k clips. */
export function historyBudget(k) {
  if (k <= 100) return 2000;
  if (k <= 1000) return 400;
  return 100;
}

/** A one-line summary of an audit entry's change (largest changes first). */
export function auditSummary(entry, limit = 4) {
  const oldValue = entry.old ?? {};
  const newValue = entry.new ?? {};
  const field = ["target_usage", "clip_probs", "reward_weights"].find((f) => f in newValue || f in oldValue);
  const parts = [];
  if (field && typeof newValue[field] === "object" && newValue[field] !== null) {
    const before = oldValue[field] ?? {};
    const after = newValue[field];
    const changes = Object.keys(after)
      .map((name) => ({ name, from: before[name], to: after[name] }))
      .filter((c) => c.from === undefined || Math.abs(c.to - c.from) > 5e-4)
      .sort((a, b) => Math.abs(b.to - (b.from ?? 0)) - Math.abs(a.to - (a.from ?? 0)));
    for (const c of changes.slice(0, limit)) {
      const from = c.from === undefined ? "" : `${(c.from * 100).toFixed(1)}% → `;
      parts.push(`${c.name} ${from}${(c.to * 100).toFixed(1)}%`);
    }
    if (changes.length > limit) parts.push(`+${changes.length - limit} more`);
  }
  for (const [key, value] of Object.entries(newValue)) {
    if (key === field) continue;
    if (value === null || typeof value !== "object") {
      const before = key in oldValue ? `${JSON.stringify(oldValue[key])} → ` : "";
      parts.push(`${key}: ${before}${JSON.stringify(value)}`);
    }
  }
  return parts.join(", ") || "—";
}
