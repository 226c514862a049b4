/*
 * The ringtrain dashboard page: plain browser JavaScript, no build step. It listens to the coordinator's
 * server-sent events (/events): a `snapshot` with everything on every (re)connect, then `update`s carrying the
 * status, new chart points and new log entries. EventSource reconnects by itself, so a restarted coordinator is
 * picked up again; while disconnected the page keeps showing the last state it had.
 *
 * Every value from the server is put into the page as text (textContent), never as HTML.
 * window.__ringtrain exposes series lengths and the latest status for tests and debugging.
 */
(() => {
  'use strict';

  const SERIES = ['loss', 'accuracy', 'throughput'];
  /** A training worker silent for this long is flagged in the table (workers report every few steps). */
  const STALE_MS = 30_000;
  const view = {
    status: null,
    series: { loss: { x: [], y: [] }, accuracy: { x: [], y: [] }, throughput: { x: [], y: [] } },
    events: [],
    /** server clock minus browser clock, from the last message */
    clockOffsetMs: 0,
    /** browser time the last message arrived, to count ETAs down between messages */
    receivedAt: 0,
    connection: 'connecting',
    /** bumped when the events or a series change, so unchanged parts are not redrawn 4 times a second */
    eventsVersion: 0,
    seriesVersion: 0,
  };
  const drawn = { eventsVersion: -1, seriesVersion: -1 };
  const charts = {};

  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // ---------------------------------------------------------------------------------------------
  // Formatting

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const fixed = (v, digits) => (isNum(v) ? v.toFixed(digits) : '–');
  const percent = (v) => (isNum(v) ? `${(100 * v).toFixed(2)}%` : '–');
  const integer = (v) => (isNum(v) ? Math.round(v).toLocaleString('en-US') : '–');
  const ms = (v) => (isNum(v) ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : '–');
  const lossText = (v) =>
    v === null ? '–' : isNum(v) ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(4)) : String(v);

  function duration(seconds) {
    if (!isNum(seconds)) return '–';
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, '0');
    return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  function ago(unixMs) {
    const s = (Date.now() + view.clockOffsetMs - unixMs) / 1000;
    if (!isNum(s)) return '–';
    if (s < 1) return 'just now';
    if (s < 90) return `${s.toFixed(0)} s ago`;
    if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
    return `${(s / 3600).toFixed(1)} h ago`;
  }

  const clock = (unixMs) => new Date(unixMs).toLocaleTimeString('en-GB', { hour12: false });

  // ---------------------------------------------------------------------------------------------
  // Charts (uPlot)

  function chartOptions(name, width) {
    const common = { width, height: 220, legend: { live: true }, cursor: { drag: { x: true, y: false } } };
    const axis = { stroke: '#6b7383', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#e3e6eb' } };
    if (name === 'loss') {
      return {
        ...common,
        scales: { x: { time: false } },
        axes: [
          {
            ...axis,
            label: 'step',
            incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000],
          },
          { ...axis, size: 56 },
        ],
        series: [
          { label: 'step', value: (u, v) => (v === null ? '–' : integer(v)) },
          {
            label: 'loss',
            stroke: '#3b6df2',
            width: 1.5,
            fill: 'rgba(59,109,242,0.07)',
            points: { show: false },
            value: (u, v) => lossText(v),
          },
        ],
      };
    }
    if (name === 'accuracy') {
      return {
        ...common,
        scales: {
          x: { time: false },
          y: { range: (u, min, max) => [Math.max(0, Math.min(min, 0.8) - 0.02), Math.min(1, Math.max(max, 0) + 0.02)] },
        },
        axes: [
          { ...axis, label: 'epoch', incrs: [1, 2, 5, 10, 20, 50, 100] },
          { ...axis, size: 56, values: (u, vals) => vals.map((v) => `${(100 * v).toFixed(0)}%`) },
        ],
        series: [
          { label: 'epoch', value: (u, v) => (v === null ? '–' : String(v)) },
          {
            label: 'test accuracy',
            stroke: '#1f9d63',
            width: 2,
            points: { show: true, size: 7, fill: '#1f9d63' },
            value: (u, v) => percent(v),
          },
        ],
      };
    }
    // Whole seconds at least: a run's first seconds otherwise get millisecond ticks.
    const secondIncrs = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
    return {
      ...common,
      scales: { x: { time: true } },
      axes: [
        { ...axis, incrs: secondIncrs },
        { ...axis, size: 56 },
      ],
      series: [
        { label: 'time' },
        {
          label: 'samples/s',
          stroke: '#f0a646',
          width: 1.5,
          fill: 'rgba(240,166,70,0.10)',
          points: { show: false },
          value: (u, v) => integer(v),
        },
      ],
    };
  }

  function chartWidth(container) {
    return Math.max(240, Math.floor(container.clientWidth));
  }

  function ensureCharts() {
    if (typeof uPlot === 'undefined') return false;
    for (const name of SERIES) {
      if (charts[name]) continue;
      const container = $(`chart-${name}`);
      charts[name] = new uPlot(chartOptions(name, chartWidth(container)), [[], []], container);
    }
    return true;
  }

  function drawCharts() {
    if (drawn.seriesVersion === view.seriesVersion || !ensureCharts()) return;
    drawn.seriesVersion = view.seriesVersion;
    for (const name of SERIES) {
      const s = view.series[name];
      charts[name].setData([s.x, s.y]);
      const container = $(`chart-${name}`);
      container.dataset.points = String(s.x.length);
      // A line needs two points (one point on a time axis stretches it over years); accuracy draws its markers.
      container.dataset.drawable = String(s.x.length >= (name === 'accuracy' ? 1 : 2));
    }
  }

  function watchChartSizes() {
    const observer = new ResizeObserver(() => {
      for (const name of SERIES) {
        if (charts[name]) charts[name].setSize({ width: chartWidth($(`chart-${name}`)), height: 220 });
      }
    });
    for (const name of SERIES) observer.observe($(`chart-${name}`));
  }

  // ---------------------------------------------------------------------------------------------
  // Rendering

  function renderHeader(st) {
    const run = st.run;
    const title = run.id
      ? `${run.model} · run ${run.id.slice(0, 8)} · batch ${run.batchSize} per worker · started ${clock(run.startedAt)}`
      : 'no run yet';
    $('run-title').textContent = title;
    const phase = $('run-phase');
    phase.textContent = run.phase;
    phase.dataset.phase = run.phase;
    document.title = `ringtrain · ${run.phase}${st.progress.epoch > 0 ? ` · epoch ${st.progress.epoch}/${st.progress.epochs}` : ''}`;
  }

  function renderProgress(st) {
    const p = st.progress;
    $('epoch-label').textContent = p.epoch > 0 ? `${p.epoch} / ${p.epochs}` : `– / ${p.epochs || '–'}`;
    const pct = Math.round(1000 * p.fraction) / 10;
    $('epoch-bar').style.width = `${pct}%`;
    $('epoch-progress').setAttribute('aria-valuenow', String(pct));
    $('epoch-samples').textContent =
      `${integer(p.samplesDone)} / ${integer(p.samplesTotal)} samples (${pct.toFixed(1)}%)`;
    renderEta();
    $('kpi-generation').textContent = st.generation > 0 ? String(st.generation) : '–';
    $('kpi-step').textContent = st.step >= 0 ? integer(st.step + 1) : '–';
    $('kpi-loss').textContent = lossText(st.latest.loss);
    $('kpi-accuracy').textContent = percent(st.latest.testAccuracy);
    $('kpi-throughput').textContent = integer(st.latest.samplesPerSec);
    $('kpi-workers').textContent = `${st.latest.workersAlive}${st.worldSize ? ` / ${st.worldSize}` : ''}`;
    renderSummary(st.summary);
  }

  function renderEta() {
    const st = view.status;
    if (!st) return;
    const p = st.progress;
    const elapsed = (Date.now() - view.receivedAt) / 1000;
    const text = st.summary
      ? st.summary.outcome === 'finished'
        ? 'done'
        : st.summary.outcome
      : p.etaSeconds === null
        ? 'ETA –'
        : `${duration(p.etaSeconds - elapsed)} left in epoch · ${duration(p.runEtaSeconds - elapsed)} left in run`;
    $('epoch-eta').textContent = text;
  }

  function renderSummary(summary) {
    const box = $('summary');
    if (!summary) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.className = `summary ${summary.outcome}`;
    box.textContent =
      summary.outcome === 'finished'
        ? `Finished: ${summary.epochs} epoch(s), ${integer(summary.steps)} steps, test accuracy ${percent(summary.testAccuracy)}, ` +
          `${integer(summary.samplesPerSec)} samples/s on ${summary.workers} worker(s), ${fixed(summary.wallSeconds, 1)} s`
        : `Run ${summary.outcome}: ${summary.error || 'no reason given'}`;
  }

  function splitBar(t) {
    const bar = el('div', 'split');
    if (!t) return bar;
    const parts = [
      ['data', t.data],
      ['compute', t.compute],
      ['allreduce', t.allreduce],
      ['apply', t.apply],
    ];
    const total = parts.reduce((s, [, v]) => s + Math.max(0, v || 0), 0);
    for (const [name, v] of parts) {
      const seg = el('div', `seg ${name}`);
      seg.style.width = total > 0 ? `${(100 * Math.max(0, v || 0)) / total}%` : '0';
      seg.title = `${name} ${ms(v)} ms`;
      bar.appendChild(seg);
    }
    bar.title =
      `step ${ms(t.step)} ms: data ${ms(t.data)} · compute ${ms(t.compute)} · allreduce ${ms(t.allreduce)} ` +
      `(reduce-scatter ${ms(t.reduceScatter)}, allgather ${ms(t.allgather)}) · apply ${ms(t.apply)}`;
    return bar;
  }

  function workerRow(w) {
    const tr = el('tr');
    tr.dataset.rank = String(w.rank);
    tr.dataset.worker = w.id;
    if (w.straggler) tr.classList.add('straggler');
    if (w.state === 'lost' || w.state === 'stopped') tr.classList.add('gone');
    const t = w.timingsMs;
    const host = el('td', '', w.host);
    host.title = `${w.id} · ${w.backend}`;
    const state = el('td');
    state.appendChild(el('span', 'state', w.state)).dataset.state = w.state;
    if (w.straggler) state.appendChild(el('span', 'tag', 'straggler'));
    const seen = el('td', 'num last-seen');
    seen.dataset.lastSeen = String(w.lastSeen);
    seen.dataset.state = w.state;
    showLastSeen(seen);
    const split = el('td');
    split.appendChild(splitBar(t));
    tr.append(
      el('td', 'num', w.rank >= 0 ? String(w.rank) : '–'),
      host,
      state,
      el('td', 'num', integer(w.samplesPerSec)),
      el('td', 'num', w.lastStep >= 0 ? integer(w.lastStep + 1) : '–'),
      split,
      el('td', 'num', ms(t && t.data)),
      el('td', 'num', ms(t && t.compute)),
      el('td', 'num', ms(t && t.allreduce)),
      el('td', 'num', ms(t && t.apply)),
      seen,
    );
    return tr;
  }

  function showLastSeen(cell) {
    const lastSeen = Number(cell.dataset.lastSeen);
    cell.textContent = ago(lastSeen);
    const stale =
      cell.dataset.state === 'training' &&
      !(view.status && view.status.summary) &&
      Date.now() + view.clockOffsetMs - lastSeen > STALE_MS;
    cell.classList.toggle('stale', stale);
    cell.title = stale ? 'no report from this worker for a while' : '';
  }

  function renderWorkers(st) {
    $('worker-rows').replaceChildren(...st.workers.map(workerRow));
    $('workers-empty').hidden = st.workers.length > 0;
  }

  function hostOfRank(st, rank) {
    const w = st.workers.find((x) => x.rank === rank && x.state !== 'lost' && x.state !== 'stopped');
    return w ? w.host : st.workers.find((x) => x.rank === rank)?.host || '–';
  }

  function waitRow(st, w, top) {
    const tr = el('tr');
    tr.dataset.rank = String(w.rank);
    tr.dataset.share = String(w.share);
    if (top) tr.classList.add('culprit');
    const bar = el('div', 'share-bar');
    const fill = el('div', 'fill');
    fill.style.width = `${(100 * w.share).toFixed(1)}%`;
    bar.appendChild(fill);
    const cell = el('td');
    cell.appendChild(bar);
    tr.append(
      el('td', 'num', String(w.rank)),
      el('td', '', hostOfRank(st, w.rank)),
      cell,
      el('td', 'num share', `${(100 * w.share).toFixed(1)}%`),
      el('td', 'num held', `${(100 * w.heldFraction).toFixed(1)}%`),
      el('td', 'num', `${integer(w.lastSteps)} step(s)`),
      el('td', 'num', `${ms(w.causedMs)} ms`),
    );
    return tr;
  }

  function renderWaits(st) {
    const waits = st.waits;
    if (!waits) return;
    const rows = waits.workers.slice().sort((a, b) => b.share - a.share || a.rank - b.rank);
    const top = rows[0];
    $('wait-rows').replaceChildren(...rows.map((w) => waitRow(st, w, w === top && w.share > 0)));
    $('waits-headline').textContent =
      waits.steps === 0 || !top
        ? 'No complete steps of a ring of two or more yet.'
        : `Rank ${top.rank} (${hostOfRank(st, top.rank)}) entered the allreduce last in ${integer(top.lastSteps)} ` +
          `of ${integer(waits.steps)} steps: it held the ring ${(100 * top.heldFraction).toFixed(1)}% of the time ` +
          `and caused ${(100 * top.share).toFixed(1)}% of everyone's waiting (${ms(waits.totalWaitMs)} ms in all).`;
    $('recent-waits').textContent = waits.recent
      .slice(-12)
      .map((w) => `step ${w.step + 1}: rank ${w.lastRank} +${ms(w.lateMs)} ms`)
      .join(' · ');
  }

  function renderEvents() {
    if (drawn.eventsVersion === view.eventsVersion) return;
    drawn.eventsVersion = view.eventsVersion;
    const items = view.events
      .slice()
      .reverse()
      .map((e) => {
        const li = el('li');
        li.dataset.level = e.level;
        li.dataset.kind = e.kind;
        const time = el('time', '', clock(e.at));
        time.dateTime = new Date(e.at).toISOString();
        li.append(time, el('span', 'lvl', e.level), el('span', 'msg', e.message));
        return li;
      });
    $('event-log').replaceChildren(...items);
    $('event-count').textContent = view.events.length ? `${view.events.length} shown` : '';
  }

  function renderConnection() {
    const ended = view.status && view.status.summary;
    const node = $('connection');
    if (view.connection === 'report') {
      node.dataset.state = 'offline';
      $('connection-text').textContent = `report · saved ${view.status ? clock(view.status.now) : ''}`;
      return;
    }
    const state = view.connection === 'live' ? 'live' : ended ? 'offline' : view.connection;
    node.dataset.state = state;
    $('connection-text').textContent =
      state === 'live'
        ? ended
          ? 'live · final state'
          : 'live'
        : state === 'offline'
          ? 'coordinator offline · final state'
          : state === 'reconnecting'
            ? 'reconnecting…'
            : 'connecting…';
  }

  function render() {
    const st = view.status;
    if (st) {
      renderHeader(st);
      renderProgress(st);
      renderWorkers(st);
      renderWaits(st);
    }
    renderEvents();
    renderConnection();
    drawCharts();
  }

  /** Once a second: relative times and ETAs move on between messages. */
  function tick() {
    for (const cell of document.querySelectorAll('td.last-seen')) showLastSeen(cell);
    renderEta();
  }

  // ---------------------------------------------------------------------------------------------
  // Live data

  function takeStatus(message) {
    const { series, events, ...status } = message;
    view.status = status;
    view.clockOffsetMs = status.now - Date.now();
    view.receivedAt = Date.now();
    return { series, events };
  }

  function onSnapshot(message) {
    const { series, events } = takeStatus(message);
    for (const name of SERIES) view.series[name] = { x: series[name].x.slice(), y: series[name].y.slice() };
    view.events = events.slice();
    view.eventsVersion++;
    view.seriesVersion++;
    render();
  }

  function onUpdate(message) {
    const { series, events } = takeStatus(message);
    for (const name of SERIES) {
      const delta = series[name];
      if (delta.reset) view.series[name] = { x: delta.x.slice(), y: delta.y.slice() };
      else if (delta.x.length) {
        view.series[name].x.push(...delta.x);
        view.series[name].y.push(...delta.y);
      }
      if (delta.reset || delta.x.length) view.seriesVersion++;
    }
    if (events.length) {
      view.events = view.events.concat(events).slice(-500);
      view.eventsVersion++;
    }
    render();
  }

  function parse(event, handler) {
    try {
      handler(JSON.parse(event.data));
    } catch (err) {
      console.error('ringtrain dashboard: bad message', err);
    }
  }

  function connect() {
    const source = new EventSource(`/events${runQuery()}`);
    source.addEventListener('snapshot', (e) => parse(e, onSnapshot));
    source.addEventListener('update', (e) => parse(e, onUpdate));
    source.onopen = () => {
      view.connection = 'live';
      renderConnection();
    };
    source.onerror = () => {
      view.connection = 'reconnecting';
      renderConnection();
      // EventSource retries network errors itself; after an HTTP error (503, 404) it gives up, so start over.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    };
  }

  /** `?run=NAME` of this page, passed on to the per-run routes. */
  function runQuery() {
    const run = new URLSearchParams(location.search).get('run');
    return run === null ? '' : `?run=${encodeURIComponent(run)}`;
  }

  /** A saved report (report.html) carries its data in the page and never connects anywhere. */
  function embeddedData() {
    const node = document.getElementById('ringtrain-data');
    return node ? JSON.parse(node.textContent) : null;
  }

  /** The timeline download appears when the run has one. */
  function offerTimeline() {
    const link = $('timeline-link');
    link.href = `/timeline.json${runQuery()}`;
    fetch(`/api/files${runQuery()}`)
      .then((res) => res.json())
      .then((files) => {
        link.hidden = !files.timeline;
      })
      .catch(() => undefined);
  }

  window.__ringtrain = {
    get lossPoints() {
      return view.series.loss.x.length;
    },
    get accuracyPoints() {
      return view.series.accuracy.x.length;
    },
    get throughputPoints() {
      return view.series.throughput.x.length;
    },
    get workerRows() {
      return document.querySelectorAll('#worker-rows tr').length;
    },
    get connection() {
      return view.connection;
    },
    get status() {
      return view.status;
    },
  };

  watchChartSizes();
  render();
  const embedded = embeddedData();
  if (embedded) {
    view.connection = 'report';
    onSnapshot(embedded);
  } else {
    connect();
    offerTimeline();
  }
  setInterval(tick, 1000);
})();
