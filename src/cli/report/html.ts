import type { LineageStep, ReportData } from './data.ts';
import { barList, escapeHtml, heatmap, lineChart } from './svg.ts';

/**
 * The report as one HTML file: inline CSS and SVG, no script and nothing fetched, so it opens from
 * a mail attachment or an air-gapped host as well as from the run's directory. Diffs open on click
 * with `<details>`.
 */

const COLOURS = { best: '#d1495b', median: '#00798c', each: '#8d96a3', cost: '#edae49', tokens: '#30638e', calls: '#66a182' };

function score(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) return value.toExponential(4);
  return String(Number(value.toFixed(4)));
}

function money(usd: number): string {
  return `$${usd.toFixed(usd >= 100 ? 2 : 4)}`;
}

function percent(fraction: number): string {
  const p = fraction * 100;
  return p === 0 || p >= 0.1 ? `${Number(p.toFixed(1))}%` : `${Number(p.toPrecision(2))}%`;
}

function short(commit: string): string {
  return commit.slice(0, 12);
}

function card(label: string, value: string, detail = ''): string {
  return `<div class="card"><div class="card-label">${escapeHtml(label)}</div><div class="card-value">${value}</div>${detail ? `<div class="card-detail">${detail}</div>` : ''}</div>`;
}

function diffHtml(diff: string): string {
  return diff
    .split('\n')
    .map((line) => {
      const cls = line.startsWith('+++') || line.startsWith('---') || line.startsWith('diff ') || line.startsWith('index ') ? 'meta' : line.startsWith('@@') ? 'hunk' : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '';
      return cls ? `<span class="${cls}">${escapeHtml(line)}</span>` : escapeHtml(line);
    })
    .join('\n');
}

function metricsText(metrics: Record<string, number>): string {
  return Object.entries(metrics)
    .map(([name, value]) => `<span class="metric"><span class="metric-name">${escapeHtml(name)}</span> ${score(value)}</span>`)
    .join(' ');
}

function lineageStep(step: LineageStep, index: number, previous: LineageStep | undefined, best: string | undefined, higher: boolean): string {
  const delta = step.fitness !== null && previous?.fitness !== null && previous?.fitness !== undefined ? step.fitness - previous.fitness : undefined;
  const improved = delta !== undefined && (higher ? delta > 0 : delta < 0);
  const deltaValue = delta === undefined ? '' : Math.abs(delta) >= 1e6 ? delta.toExponential(3) : delta.toFixed(4);
  const deltaText = delta === undefined ? '' : `<span class="delta ${improved ? 'up' : delta === 0 ? 'flat' : 'down'}">${delta >= 0 ? '+' : ''}${deltaValue}</span>`;
  const title = step.summary || step.message || (index === 0 ? 'root commit' : '');
  const diff = step.diff !== null
    ? `<details class="diff"><summary><span class="stat-line">${escapeHtml((step.diffStat ?? '').split('\n').at(-1)?.trim() || 'diff')}</span> <span class="hint">show the diff</span></summary><pre class="stat">${escapeHtml(step.diffStat ?? '')}</pre><pre class="diff-text">${diffHtml(step.diff)}</pre></details>`
    : index === 0
      ? '<div class="hint">the root of the experiment</div>'
      : '<div class="hint">diff unavailable: the commit is not in a local repository</div>';
  return `<li class="step${step.commit === best ? ' best' : ''}" data-commit="${step.commit}">
  <div class="step-head"><code class="commit" title="${step.commit}">${short(step.commit)}</code> <span class="fitness">${score(step.fitness)}</span> ${deltaText}${step.jobId ? ` <span class="job">job ${escapeHtml(step.jobId.slice(0, 8))}</span>` : ''}${step.commit === best ? ' <span class="badge">best</span>' : ''}</div>
  <div class="step-title">${escapeHtml(title)}</div>
  <div class="metrics">${metricsText(step.metrics)}</div>
  ${diff}
</li>`;
}

const STYLE = `
:root { --fg: #1d2430; --muted: #667085; --line: #e4e7ec; --bg: #f7f8fa; --card: #fff; --accent: #d1495b; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 20px 32px 12px; background: #1d2430; color: #fff; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header .sub { color: #c0c6d0; margin-top: 4px; font-size: 13px; }
main { padding: 20px 32px 40px; max-width: 1280px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 20px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card-label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card-value { font-size: 22px; font-weight: 600; margin-top: 2px; }
.card-detail { color: var(--muted); font-size: 12px; margin-top: 2px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px; margin-bottom: 20px; }
section h2 { margin: 0 0 12px; font-size: 16px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 20px; align-items: start; }
svg text { font-size: 11px; fill: var(--muted); }
svg .label { font-size: 12px; fill: var(--fg); }
svg .grid { stroke: var(--line); stroke-width: 1; }
svg .axis { stroke: #98a2b3; stroke-width: 1; }
svg .line { fill: none; stroke-width: 2.2; }
svg .hidden-point { fill: transparent; }
svg .reference { stroke: #98a2b3; stroke-dasharray: 5 4; }
svg .reference-label { fill: #667085; }
svg .frame { fill: #fbfbfc; stroke: #d0d5dd; }
svg .cell { stroke: rgba(255,255,255,.6); stroke-width: .5; }
svg .cell.best { stroke: var(--accent); stroke-width: 2.5; }
.legend { margin-top: 4px; color: var(--muted); font-size: 12px; }
.legend-item { margin-right: 14px; white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.ramp { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 12px; margin-top: 6px; }
.ramp-bar { display: inline-block; width: 180px; height: 10px; border-radius: 3px; }
.facts { color: var(--muted); margin: 6px 0 0; padding-left: 18px; }
ol.lineage { list-style: none; padding: 0; margin: 0; border-left: 2px solid var(--line); }
.step { position: relative; padding: 8px 0 10px 18px; }
.step::before { content: ""; position: absolute; left: -6px; top: 14px; width: 10px; height: 10px; border-radius: 50%; background: #98a2b3; }
.step.best::before { background: var(--accent); }
.step-head { font-weight: 600; }
.step-title { margin: 2px 0; }
.commit { background: #eef1f5; padding: 1px 5px; border-radius: 4px; font-size: 12px; }
.fitness { margin-left: 6px; }
.delta.up { color: #16803c; } .delta.down { color: #b42318; } .delta.flat { color: var(--muted); }
.job, .hint { color: var(--muted); font-weight: normal; font-size: 12px; }
.badge { background: var(--accent); color: #fff; border-radius: 10px; padding: 0 8px; font-size: 11px; }
.metrics { color: var(--muted); font-size: 12px; }
.metric { margin-right: 10px; } .metric-name { color: #475467; }
details.diff summary { cursor: pointer; color: #30638e; margin-top: 4px; }
pre { background: #0f1720; color: #d0d7e2; padding: 10px 12px; border-radius: 6px; overflow: auto; max-height: 480px; font-size: 12px; }
pre.stat { background: #f2f4f7; color: var(--fg); max-height: 200px; }
pre .add { color: #7ee787; } pre .del { color: #ff7b72; } pre .hunk { color: #79c0ff; } pre .meta { color: #d2a8ff; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num { font-variant-numeric: tabular-nums; }
.bars { display: grid; gap: 6px; }
.bar-row { display: grid; grid-template-columns: minmax(200px, 45%) 1fr 40px; gap: 10px; align-items: center; }
.bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 12px; }
.bar-track { background: #f2f4f7; border-radius: 4px; height: 12px; }
.bar { background: var(--accent); height: 12px; border-radius: 4px; }
.bar-value { text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; text-align: center; padding-bottom: 24px; }
`;

export function renderReport(data: ReportData): string {
  const { experiment, metric, best, archive, usage, jobs } = data;
  const gain = best && data.baseline !== null ? best.fitness - data.baseline : undefined;
  const finished = experiment.finishedAt ? `finished ${experiment.finishedAt.toISOString().replace('T', ' ').slice(0, 19)} UTC` : 'running or stopped before the end';
  const dimName = (i: number) => `descriptor dimension ${i}`;

  const cards = [
    card(`best ${metric}`, score(best?.fitness), best ? `<code>${short(best.commit)}</code>` : 'no scored commit yet'),
    card('baseline', score(data.baseline), gain !== undefined ? `${gain >= 0 ? '+' : ''}${score(gain)} by the best` : ''),
    card('jobs', `${jobs.total}${jobs.budget !== null ? ` / ${jobs.budget}` : ''}`, `${jobs.byStatus.succeeded} succeeded, ${jobs.byStatus.failed} failed`),
    card('archive', `${archive.elites}`, `elites; coverage ${percent(archive.coverage)} of ${archive.cells} cells`),
    card('model cost', money(usage.costUsd), `${usage.calls} calls, ${usage.tokens} tokens`),
  ].join('');

  const fitness = lineChart({
    id: 'fitness-chart',
    yLabel: metric,
    width: 1180,
    height: 340,
    series: [
      { name: 'each scored job', colour: COLOURS.each, points: data.fitnessOverTime.each, scatter: true },
      { name: 'median so far', colour: COLOURS.median, points: data.fitnessOverTime.median },
      { name: 'best so far', colour: COLOURS.best, points: data.fitnessOverTime.best },
    ],
    reference: data.baseline !== null ? { y: data.baseline, label: `baseline ${score(data.baseline)}` } : undefined,
  });

  const map = heatmap({
    cells: archive.heatmap,
    bins: archive.bins,
    xLabel: archive.dimensions >= 2 ? dimName(archive.shown[0]) : 'descriptor',
    yLabel: archive.dimensions >= 2 ? dimName(archive.shown[1]) : '',
    higherIsBetter: data.higherIsBetter,
    best: best?.commit,
  });

  const lineage = data.lineage.length
    ? `<ol class="lineage">${data.lineage.map((step, i) => lineageStep(step, i, data.lineage[i - 1], best?.commit, data.higherIsBetter)).join('\n')}</ol>`
    : '<p class="empty">No best commit yet.</p>';

  const top = data.top.length
    ? `<table id="top-commits"><thead><tr><th>#</th><th>commit</th><th>${escapeHtml(metric)}</th><th>job</th><th>metrics</th><th>summary</th></tr></thead><tbody>${data.top
        .map((row, i) => `<tr><td>${i + 1}</td><td><code class="commit" title="${row.commit}">${short(row.commit)}</code></td><td class="num">${score(row.fitness)}</td><td>${row.jobId ? escapeHtml(row.jobId.slice(0, 8)) : ''}</td><td class="metrics">${metricsText(row.metrics)}</td><td>${escapeHtml(row.summary.slice(0, 160))}</td></tr>`)
        .join('')}</tbody></table>`
    : '<p class="empty">No scored commits yet.</p>';

  const failures = `<div id="failures">${barList(data.failures.map((f) => ({ label: f.reason, value: f.count, detail: f.example })))}</div>${data.failures.length ? `<details><summary>examples</summary>${data.failures.map((f) => `<p><b>${escapeHtml(f.reason)}</b> (${f.count}; jobs ${f.jobs.slice(0, 5).map((j) => escapeHtml(j.slice(0, 8))).join(', ')})</p><pre class="stat">${escapeHtml(f.example)}</pre>`).join('')}</details>` : ''}`;

  const usageCharts = usage.calls
    ? `<div class="grid2"><div>${lineChart({ id: 'cost-chart', yLabel: 'cost (USD), cumulative', series: [{ name: 'cost', colour: COLOURS.cost, points: usage.cumulativeCost }], formatY: (v) => `$${Number(v.toPrecision(4))}` })}</div><div>${lineChart({ id: 'tokens-chart', yLabel: 'tokens, cumulative', series: [{ name: 'tokens', colour: COLOURS.tokens, points: usage.cumulativeTokens }, ]})}</div></div>
<table><thead><tr><th>model</th><th>calls</th><th>tokens</th><th>cost</th></tr></thead><tbody>${usage.byModel.map((m) => `<tr><td>${escapeHtml(m.model)}</td><td class="num">${m.calls}</td><td class="num">${m.tokens}</td><td class="num">${money(m.costUsd)}</td></tr>`).join('')}</tbody></table>`
    : '<p class="empty">No model calls: this experiment\'s agent is a plain command.</p>';

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Loreley report: ${escapeHtml(experiment.slug)}</title><style>${STYLE}</style></head>
<body>
<header><h1>Loreley report: ${escapeHtml(experiment.slug)}</h1>
<div class="sub">${escapeHtml(experiment.namespace)} · started ${experiment.createdAt.toISOString().replace('T', ' ').slice(0, 19)} UTC · ${finished} · root <code>${experiment.rootCommit ? short(experiment.rootCommit) : '–'}</code></div></header>
<main>
<div class="cards">${cards}</div>
<section id="fitness"><h2>Fitness over time</h2>${fitness}</section>
<div class="grid2">
<section id="archive"><h2>The archive</h2>${map}
<ul class="facts"><li>${archive.elites} elites in ${archive.cells} cells: coverage ${percent(archive.coverage)}</li><li>${archive.heatmap.length} squares shown: ${archive.dimensions >= 2 ? `dimensions ${archive.shown[0]} and ${archive.shown[1]} of ${archive.dimensions}, the best elite over the others (loreley report --dims i,j)` : 'a one-dimensional descriptor'}</li><li>the best commit's square has a red border</li></ul></section>
<section id="lineage"><h2>Lineage of the best commit</h2>${lineage}</section>
</div>
<section id="top"><h2>Top commits</h2>${top}</section>
<section id="failures-section"><h2>Failures by reason</h2>${failures}</section>
<section id="usage"><h2>Model calls, tokens and cost</h2>${usageCharts}</section>
</main>
<footer>Generated by loreley report at ${data.generatedAt.toISOString()} · ${data.repository ? `diffs from ${escapeHtml(data.repository)}` : 'no local repository for diffs'}</footer>
</body></html>
`;
}
