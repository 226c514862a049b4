/*
 * Several runs side by side (`ringtrain dashboard --run-dir A --run-dir B`, or a folder of runs): a table of the
 * runs and their loss and accuracy curves on shared charts. Shown instead of the single-run view when the dashboard
 * has more than one run and the address names none (`?run=NAME` opens one). Refreshed every few seconds, so runs
 * still going elsewhere move on. Every value goes into the page as text, never as HTML.
 */
(() => {
  'use strict';

  const COLORS = ['#3b6df2', '#f0a646', '#1f9d63', '#d64545', '#8e5bd9', '#2bb3c0', '#c76b98', '#6b7383'];
  const REFRESH_MS = 3000;
  const charts = {};
  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const percent = (v) => (isNum(v) ? `${(100 * v).toFixed(2)}%` : '–');
  const integer = (v) => (isNum(v) ? Math.round(v).toLocaleString('en-US') : '–');

  function culprit(run) {
    const top = (run.waits.workers || []).slice().sort((a, b) => b.share - a.share)[0];
    return top && top.share > 0 ? `rank ${top.rank}: ${(100 * top.share).toFixed(1)}% of the waiting` : '–';
  }

  function runRow(run, i) {
    const tr = el('tr');
    tr.dataset.run = run.name;
    const name = el('td');
    const swatch = el('i', 'sw');
    swatch.style.background = COLORS[i % COLORS.length];
    const link = el('a', '', run.name);
    link.href = `?run=${encodeURIComponent(run.name)}`;
    name.append(swatch, link);
    const s = run.summary;
    tr.append(
      name,
      el('td', '', run.run.model || '–'),
      el('td', 'phase', run.run.phase),
      el('td', 'num', `${run.history.length} / ${run.run.epochs || '–'}`),
      el('td', 'num', String(s ? s.workers : run.worldSize)),
      el('td', 'num accuracy', percent(s ? s.testAccuracy : run.latest.testAccuracy)),
      el('td', 'num', integer(run.latest.samplesPerSec)),
      el('td', 'num', s ? `${s.wallSeconds.toFixed(1)} s` : '–'),
      el('td', '', culprit(run)),
    );
    return tr;
  }

  function chart(id, runs, pick, label) {
    const tables = runs.map((r) => [r.series[pick].x, r.series[pick].y]);
    const data = tables.length ? uPlot.join(tables) : [[]];
    const container = $(id);
    if (charts[id] && charts[id].series.length !== runs.length + 1) {
      charts[id].destroy();
      delete charts[id];
    }
    if (!charts[id]) {
      const series = [{ label }].concat(
        runs.map((r, i) => ({ label: r.name, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true })),
      );
      const width = Math.max(240, Math.floor(container.clientWidth));
      const incrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
      const axes = [{ label, incrs }, { size: 56 }];
      charts[id] = new uPlot({ width, height: 240, scales: { x: { time: false } }, axes, series }, data, container);
    } else charts[id].setData(data);
    container.dataset.series = String(runs.length);
  }

  function render(runs) {
    $('runs-count').textContent = `${runs.length} runs`;
    $('run-rows').replaceChildren(...runs.map(runRow));
    chart('runs-chart-loss', runs, 'loss', 'step');
    chart('runs-chart-accuracy', runs, 'accuracy', 'epoch');
  }

  async function refresh() {
    try {
      const res = await fetch('/api/runs', { cache: 'no-store' });
      if (!res.ok) return;
      const { runs } = await res.json();
      if (runs.length < 2) return;
      $('runs-view').hidden = false;
      $('run-view').hidden = true;
      document.title = `ringtrain · ${runs.length} runs`;
      $('run-title').textContent = `${runs.length} runs side by side`;
      render(runs);
      window.__ringtrainRuns = runs;
    } catch (err) {
      console.error('ringtrain dashboard: runs', err);
    }
  }

  if (document.getElementById('ringtrain-data') || new URLSearchParams(location.search).has('run')) return;
  void refresh();
  setInterval(refresh, REFRESH_MS);
})();
