import type { HeatmapCell, TimePoint } from './data.ts';

/**
 * The report's charts, drawn as inline SVG strings: no library, no script, nothing fetched. Every
 * data point is an element with a class (`point`, `cell`) so a test (or a person with devtools)
 * can count what was drawn.
 */

export function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface Series {
  readonly name: string;
  readonly colour: string;
  readonly points: readonly TimePoint[];
  /** Dots only (every observation), no line. */
  readonly scatter?: boolean;
  /** Dots on the line (few points), or none (many). */
  readonly dots?: boolean;
}

/** Round tick values spanning [min, max]: 1, 2 or 5 times a power of ten. */
function ticks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function formatTick(value: number): string {
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude >= 1e6 || magnitude < 1e-3)) return value.toExponential(1);
  return String(Number(value.toPrecision(6)));
}

function formatTime(t: number, spanMs: number): string {
  const date = new Date(t);
  const iso = date.toISOString();
  if (spanMs > 2 * 86_400_000) return iso.slice(5, 10) + ' ' + iso.slice(11, 16);
  if (spanMs > 600_000) return iso.slice(11, 16);
  return iso.slice(11, 19);
}

export interface LineChartOptions {
  readonly id: string;
  readonly series: readonly Series[];
  readonly yLabel: string;
  readonly width?: number;
  readonly height?: number;
  /** A horizontal reference line (the baseline). */
  readonly reference?: { readonly y: number; readonly label: string };
  readonly formatY?: (value: number) => string;
}

/** Values over time; x is wall-clock time (UTC). */
export function lineChart(options: LineChartOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 280;
  const margin = { left: 64, right: 16, top: 16, bottom: 40 };
  const all = options.series.flatMap((s) => s.points);
  if (all.length === 0) return `<p class="empty">No data yet.</p>`;
  const ys = all.map((p) => p.y).concat(options.reference ? [options.reference.y] : []);
  let [minY, maxY] = [Math.min(...ys), Math.max(...ys)];
  if (minY === maxY) [minY, maxY] = [minY - (Math.abs(minY) || 1) * 0.05, maxY + (Math.abs(maxY) || 1) * 0.05];
  const padY = (maxY - minY) * 0.06;
  minY -= padY;
  maxY += padY;
  let [minT, maxT] = [Math.min(...all.map((p) => p.t)), Math.max(...all.map((p) => p.t))];
  if (minT === maxT) [minT, maxT] = [minT - 1000, maxT + 1000];
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const x = (t: number) => margin.left + ((t - minT) / (maxT - minT)) * plotW;
  const y = (v: number) => margin.top + (1 - (v - minY) / (maxY - minY)) * plotH;
  const fmt = options.formatY ?? formatTick;

  const parts: string[] = [];
  for (const value of ticks(minY, maxY)) {
    parts.push(`<line class="grid" x1="${margin.left}" x2="${width - margin.right}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}"/>`);
    parts.push(`<text class="tick" x="${margin.left - 6}" y="${(y(value) + 4).toFixed(1)}" text-anchor="end">${escapeHtml(fmt(value))}</text>`);
  }
  const span = maxT - minT;
  for (let i = 0; i <= 4; i += 1) {
    const t = minT + (span * i) / 4;
    const anchor = i === 0 ? 'start' : i === 4 ? 'end' : 'middle';
    parts.push(`<text class="tick" x="${x(t).toFixed(1)}" y="${height - margin.bottom + 16}" text-anchor="${anchor}">${formatTime(t, span)}</text>`);
  }
  parts.push(`<line class="axis" x1="${margin.left}" x2="${margin.left}" y1="${margin.top}" y2="${height - margin.bottom}"/>`);
  parts.push(`<line class="axis" x1="${margin.left}" x2="${width - margin.right}" y1="${height - margin.bottom}" y2="${height - margin.bottom}"/>`);
  parts.push(`<text class="label" transform="translate(14 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(options.yLabel)}</text>`);
  parts.push(`<text class="label" x="${margin.left + plotW / 2}" y="${height - 6}" text-anchor="middle">time (UTC)</text>`);
  if (options.reference) {
    const ry = y(options.reference.y).toFixed(1);
    parts.push(`<line class="reference" x1="${margin.left}" x2="${width - margin.right}" y1="${ry}" y2="${ry}"/>`);
    parts.push(`<text class="reference-label" x="${margin.left + 6}" y="${Number(ry) - 4}" text-anchor="start">${escapeHtml(options.reference.label)}</text>`);
  }
  for (const series of options.series) {
    const name = escapeHtml(series.name);
    if (!series.scatter && series.points.length > 1) {
      // A step line: the value holds until the next observation.
      let d = '';
      series.points.forEach((p, i) => {
        d += i === 0 ? `M${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}` : `H${x(p.t).toFixed(1)}V${y(p.y).toFixed(1)}`;
      });
      parts.push(`<path class="line" d="${d}" stroke="${series.colour}" data-series="${name}"/>`);
    }
    if (series.scatter || series.dots || series.points.length === 1) {
      for (const p of series.points) {
        parts.push(
          `<circle class="point" data-series="${name}" cx="${x(p.t).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="${series.scatter ? 2.5 : 3}" fill="${series.colour}"><title>${name}: ${escapeHtml(fmt(p.y))} at ${new Date(p.t).toISOString()}</title></circle>`,
        );
      }
    } else {
      // Still one element per point for counting and tooltips, invisible on a dense line.
      for (const p of series.points) parts.push(`<circle class="point hidden-point" data-series="${name}" cx="${x(p.t).toFixed(1)}" cy="${y(p.y).toFixed(1)}" r="4"><title>${name}: ${escapeHtml(fmt(p.y))} at ${new Date(p.t).toISOString()}</title></circle>`);
    }
  }
  const legend = options.series
    .map((s) => `<span class="legend-item"><span class="swatch" style="background:${s.colour}"></span>${escapeHtml(s.name)}</span>`)
    .join('');
  return `<svg id="${options.id}" class="chart" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="${escapeHtml(options.yLabel)} over time">${parts.join('')}</svg><div class="legend">${legend}</div>`;
}

/** Viridis-like ramp from dark purple (worst) to yellow (best). */
const RAMP = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];

function colourAt(fraction: number): string {
  const index = Math.min(RAMP.length - 1, Math.max(0, Math.round(fraction * (RAMP.length - 1))));
  return RAMP[index];
}

export interface HeatmapOptions {
  readonly cells: readonly HeatmapCell[];
  readonly bins: number;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly higherIsBetter: boolean;
  readonly best?: string;
}

/** The archive through two descriptor dimensions: one square per filled bin, coloured by fitness. */
export function heatmap(options: HeatmapOptions): string {
  const size = 420;
  const margin = { left: 48, right: 12, top: 12, bottom: 40 };
  const step = size / options.bins;
  if (options.cells.length === 0) return `<p class="empty">The archive is empty.</p>`;
  const values = options.cells.map((c) => c.fitness);
  const [min, max] = [Math.min(...values), Math.max(...values)];
  const fraction = (v: number) => (max === min ? 1 : options.higherIsBetter ? (v - min) / (max - min) : (max - v) / (max - min));
  const parts: string[] = [`<rect class="frame" x="${margin.left}" y="${margin.top}" width="${size}" height="${size}"/>`];
  for (let i = 1; i < options.bins; i += 1) {
    if (options.bins > 16 && i % Math.round(options.bins / 8) !== 0) continue;
    parts.push(`<line class="grid" x1="${margin.left + i * step}" x2="${margin.left + i * step}" y1="${margin.top}" y2="${margin.top + size}"/>`);
    parts.push(`<line class="grid" x1="${margin.left}" x2="${margin.left + size}" y1="${margin.top + i * step}" y2="${margin.top + i * step}"/>`);
  }
  for (const cell of options.cells) {
    const px = margin.left + cell.x * step;
    const py = margin.top + (options.bins - 1 - cell.y) * step;
    const isBest = options.best === cell.commit;
    parts.push(
      `<rect class="cell${isBest ? ' best' : ''}" data-commit="${cell.commit}" x="${px.toFixed(2)}" y="${py.toFixed(2)}" width="${step.toFixed(2)}" height="${step.toFixed(2)}" fill="${colourAt(fraction(cell.fitness))}"><title>bin (${cell.x}, ${cell.y}): best ${formatTick(cell.fitness)} at ${cell.commit.slice(0, 12)}; ${cell.elites} elite${cell.elites === 1 ? '' : 's'}</title></rect>`,
    );
  }
  for (const [at, text] of [[0, '0'], [options.bins / 2, '0.5'], [options.bins, '1']] as const) {
    parts.push(`<text class="tick" x="${margin.left + at * step}" y="${margin.top + size + 14}" text-anchor="middle">${text}</text>`);
    parts.push(`<text class="tick" x="${margin.left - 6}" y="${margin.top + size - at * step + 4}" text-anchor="end">${text}</text>`);
  }
  parts.push(`<text class="label" x="${margin.left + size / 2}" y="${margin.top + size + 32}" text-anchor="middle">${escapeHtml(options.xLabel)}</text>`);
  parts.push(`<text class="label" transform="translate(14 ${margin.top + size / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(options.yLabel)}</text>`);
  const width = margin.left + size + margin.right;
  const height = margin.top + size + margin.bottom;
  const legend = `<div class="ramp"><span>${escapeHtml(formatTick(options.higherIsBetter ? min : max))}</span><span class="ramp-bar" style="background:linear-gradient(to right, ${RAMP.join(', ')})"></span><span>${escapeHtml(formatTick(options.higherIsBetter ? max : min))}</span></div>`;
  return `<svg id="archive-heatmap" class="heatmap" viewBox="0 0 ${width} ${height}" width="${width}" role="img" aria-label="archive heatmap">${parts.join('')}</svg>${legend}`;
}

/** Horizontal bars: failures by reason. */
export function barList(rows: ReadonlyArray<{ readonly label: string; readonly value: number; readonly detail?: string }>): string {
  if (rows.length === 0) return `<p class="empty">None.</p>`;
  const max = Math.max(...rows.map((r) => r.value));
  return `<div class="bars">${rows
    .map(
      (r) =>
        `<div class="bar-row"><div class="bar-label" title="${escapeHtml(r.detail ?? r.label)}">${escapeHtml(r.label)}</div><div class="bar-track"><div class="bar" style="width:${((r.value / max) * 100).toFixed(1)}%"></div></div><div class="bar-value">${r.value}</div></div>`,
    )
    .join('')}</div>`;
}
