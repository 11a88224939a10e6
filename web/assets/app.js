// Tideline live job dashboard. Plain ES, no dependencies, no build step.
(() => {
'use strict';

var POLL_MS = 1000, TIMEOUT_MS = 4000;
var SVGNS = 'http://www.w3.org/2000/svg';

var state = {
  job: null, graphKey: null, metrics: null, updates: 0, lastOk: 0, lost: false, everOk: false,
  jobPending: false, expanded: {}, prevSrcLag: {}, srcGrow: {}, prevCounts: null, nodes: {}
};

// ---------- helpers ----------
function $(id) { return document.getElementById(id); }
function isNum(v) { return typeof v === 'number' && isFinite(v); }
function arr(v) { return Array.isArray(v) ? v : []; }
function objs(v) { return arr(v).filter(x => x && typeof x === 'object'); }
function esc(s) {
  return String(s == null ? '' : s).replace(/[&<>"']/g, c => {
    return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
  });
}
function setText(id, t) { var e = $(id); if (e && e.textContent !== t) e.textContent = t; }
function fmtInt(n) { return isNum(n) ? Math.round(n).toLocaleString('en-US') : '—'; }
function compact(n) {
  if (!isNum(n)) return '—';
  var a = Math.abs(n);
  if (a < 1000) return a < 10 && a % 1 ? n.toFixed(1) : String(Math.round(n));
  var units = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (var i = 0; i < units.length; i++) {
    if (a >= units[i][0] * 0.9995) {
      var v = n / units[i][0], av = Math.abs(v);
      return (av >= 99.95 ? v.toFixed(0) : av >= 9.995 ? v.toFixed(1) : v.toFixed(2)) + ' ' + units[i][1];
    }
  }
  return String(n);
}
function rate(n) { return isNum(n) ? compact(n) + '/s' : '—'; }
function fmtDur(ms) {
  if (!isNum(ms)) return '—';
  var neg = ms < 0, a = Math.abs(ms), s;
  if (a < 1000) s = Math.round(a) + ' ms';
  else if (a < 60000) s = (a / 1000).toFixed(a < 10000 ? 2 : 1) + ' s';
  else if (a < 3600000) s = Math.floor(a / 60000) + ' min ' + Math.floor(a % 60000 / 1000) + ' s';
  else if (a < 86400000) s = Math.floor(a / 3600000) + ' h ' + Math.floor(a % 3600000 / 60000) + ' min';
  else s = Math.floor(a / 86400000) + ' d ' + Math.floor(a % 86400000 / 3600000) + ' h';
  return (neg ? '−' : '') + s;
}
function fmtUptime(ms) { return isNum(ms) ? (ms < 60000 ? Math.floor(ms / 1000) + ' s' : fmtDur(ms)) : '—'; }
function fmtBytes(b) {
  if (!isNum(b)) return '—';
  if (b < 1024) return Math.round(b) + ' B';
  var u = ['KiB', 'MiB', 'GiB', 'TiB'], v = b, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < u.length - 1);
  return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ' + u[i];
}
function iso(ms) {
  if (!isNum(ms)) return null;
  var d = new Date(ms);
  return isNaN(d.getTime()) ? null : d.toISOString();
}
// Time of day (UTC, ms) – with the date in front when it is not the date of `ref`.
function fmtTime(ms, ref) {
  var s = iso(ms);
  if (!s) return '—';
  var r = iso(ref);
  var t = s.slice(11, 23);
  return r && r.slice(0, 10) === s.slice(0, 10) ? t : s.slice(0, 10) + ' ' + t;
}
function timeCell(ms, ref) {
  var s = iso(ms);
  return s ? '<span class="mono" title="' + esc(s) + '">' + esc(fmtTime(ms, ref)) + '</span>' : '—';
}
function pct(f) { return isNum(f) ? (f * 100).toFixed(f < 0.1 && f > 0 ? 1 : 0) + ' %' : '—'; }
function bpClass(f) { return !isNum(f) ? 'na' : f < 0.1 ? 'ok' : f < 0.5 ? 'warn' : 'high'; }
function barCell(f) {
  if (!isNum(f)) return '<span class="muted">—</span>';
  var c = bpClass(f), w = Math.max(0, Math.min(1, f)) * 100;
  return '<span class="minibar ' + c + '"><i style="width:' + w.toFixed(1) + '%"></i></span>' +
    '<span class="' + (c === 'ok' ? '' : c) + '">' + pct(f) + '</span>';
}
function sum(list, f) {
  var s = 0, any = false;
  list.forEach(x => { var v = f(x); if (isNum(v)) { s += v; any = true; } });
  return any ? s : null;
}
function maxOf(list, f) {
  var m = null;
  list.forEach(x => { var v = f(x); if (isNum(v) && (m === null || v > m)) m = v; });
  return m;
}
function opBackpressure(o) {
  return isNum(o.backpressure) ? o.backpressure : maxOf(objs(o.subtasks), s => s.backpressure);
}
function cid(id) { return id != null ? '#' + id : '#?'; }
function kindOf(op) { return op && (op.kind === 'source' || op.kind === 'sink') ? op.kind : 'operator'; }

// ---------- polling ----------
function getJSON(url) {
  var ctl = typeof AbortController === 'function' ? new AbortController() : null;
  var timer = setTimeout(() => { if (ctl) ctl.abort(); }, TIMEOUT_MS);
  return fetch(url, { cache: 'no-store', signal: ctl ? ctl.signal : undefined }).then(r => {
    if (!r.ok) throw new Error('HTTP ' + r.status);
    return r.json();
  }).finally(() => { clearTimeout(timer); });
}

function loadJob() {
  if (state.jobPending) return;
  state.jobPending = true;
  getJSON('api/job').then(job => {
    if (job && typeof job === 'object') {
      state.job = job;
      renderGraph();
      if (state.metrics) render(state.metrics);
      else renderHeader(job);
    }
  }).catch(() => { /* retried on the next poll */ }).finally(() => { state.jobPending = false; });
}

// A watermark of +inf (i64::MAX: the input ended) is no position in time.
var END_OF_INPUT = 9e15;
function dropEndWatermarks(m) {
  var fix = x => { if (x && isNum(x.watermark_ms) && x.watermark_ms >= END_OF_INPUT) { x.watermark_ms = null; x.watermark_lag_ms = null; } };
  objs(m.operators).forEach(o => { fix(o); objs(o.subtasks).forEach(fix); });
  objs(m.sources).forEach(fix);
}

function poll() {
  getJSON('api/metrics').then(m => {
    if (!m || typeof m !== 'object') throw new Error('bad payload');
    dropEndWatermarks(m);
    state.metrics = m;
    state.updates++;
    state.lastOk = Date.now();
    state.lost = false;
    state.everOk = true;
    var js = (m.job && m.job.status) || null;
    if (!state.job || (js && state.job.status !== js) ||
        objs(m.operators).length !== objs(state.job.operators).length) loadJob();
    try { render(m); } catch (e) { if (window.console) console.error(e); }
    document.body.dataset.updates = String(state.updates);
  }).catch(() => {
    state.lost = true;
    if (!state.job) loadJob();
  }).finally(() => {
    tick();
    setTimeout(poll, POLL_MS);
  });
}

function tick() {
  var el = $('conn');
  if (!el) return;
  var cls, txt;
  if (state.lost) {
    cls = 'conn conn-lost';
    txt = state.everOk ? 'connection lost · data from ' + fmtUptime(Date.now() - state.lastOk) + ' ago · retrying' : 'connection lost · retrying';
  } else if (!state.everOk) {
    cls = 'conn conn-wait'; txt = 'connecting…';
  } else {
    var ago = Math.max(0, Math.floor((Date.now() - state.lastOk) / 1000));
    cls = ago > 3 ? 'conn conn-wait' : 'conn conn-ok';
    txt = 'updated ' + ago + ' s ago';
  }
  if (el.className !== cls) el.className = cls;
  if (el.textContent !== txt) el.textContent = txt;
  document.body.classList.toggle('stale', state.lost);
}

// ---------- rendering ----------
function render(m) {
  var job = Object.assign({}, state.job || {}, m.job || {});
  renderHeader(job);
  var ops = objs(m.operators);
  renderCards(m, ops);
  renderSparks(m);
  updateGraph(ops, m);
  renderOps(ops, m);
  renderSources(m);
  renderCheckpoints(m.checkpoints || {});
  renderDead(m, ops);
}

function renderHeader(job) {
  var st = job.status ? String(job.status) : 'unknown';
  var b = $('status');
  b.textContent = st;
  b.className = 'badge st-' + (/^(created|running|restarting|finished|failed|cancelled)$/.test(st) ? st : 'unknown');
  document.body.dataset.status = st;
  document.title = st.toUpperCase() + ' · Tideline job';
  setText('uptime', fmtUptime(job.uptime_ms));
  setText('restarts', isNum(job.restarts) ? String(job.restarts) : '—');
  $('restarts').className = job.restarts > 0 ? 'alert' : '';
  var n = state.job ? objs(state.job.operators).length : null;
  setText('opcount', n === null ? '—' : String(n));
  var err = job.last_error;
  var box = $('error');
  if (err != null && err !== '') {
    box.hidden = false;
    setText('error-text', typeof err === 'string' ? err : JSON.stringify(err, null, 2));
  } else box.hidden = true;
}

function sourceOps(ops) {
  var kinds = {};
  if (state.job) objs(state.job.operators).forEach(o => { kinds[o.id] = o.kind; });
  var src = ops.filter(o => kinds[o.id] === 'source');
  if (!src.length) { // graph unknown: sources are the operators that read nothing
    src = ops.filter(o => !o.records_in && o.records_out > 0);
  }
  return src;
}

function setCard(id, cls) { var c = $(id); if (c) c.className = 'card' + (cls ? ' ' + cls : ''); }

function renderCards(m, ops) {
  var src = sourceOps(ops);
  var tp = sum(src, o => o.out_per_s);
  var h = m.history || {};
  if (tp === null) { var t = arr(h.throughput); if (t.length && isNum(t[t.length - 1])) tp = t[t.length - 1]; }
  setText('throughput', tp === null ? '—' : fmtInt(tp) + ' rec/s');
  setText('throughput-sub', src.length ? 'read by ' + src.length + ' source' + (src.length > 1 ? 's' : '') : 'read by all sources');
  setText('events', fmtInt(sum(src, o => o.records_out)));

  var wms = ops.map(o => o.watermark_ms).filter(isNum);
  var minWm = wms.length ? Math.min.apply(null, wms) : null;
  var lag = maxOf(ops, o => o.watermark_lag_ms);
  if (lag === null && minWm !== null && isNum(m.time_ms)) lag = m.time_ms - minWm;
  var e = $('minwm');
  e.textContent = minWm === null ? 'not set' : fmtTime(minWm, m.time_ms);
  e.title = iso(minWm) || 'no watermark yet';
  setText('minwm-sub', 'lag ' + fmtDur(lag));
  setCard('card-wm', lag > 60000 ? 'warn' : '');

  var now = Date.now(), late = isNum(m.late_records) ? m.late_records : sum(ops, o => o.late_records);
  var dead = isNum(m.dead_letters) ? m.dead_letters : sum(ops, o => o.dead_letters);
  var prev = state.prevCounts;
  function delta(v, p) {
    if (!prev || !isNum(v) || !isNum(p) || v <= p) return '';
    return ' · +' + fmtInt(v - p) + ' in ' + Math.max(1, Math.round((now - prev.at) / 1000)) + ' s';
  }
  setText('late', fmtInt(late));
  setText('late-sub', 'behind the watermark' + delta(late, prev && prev.late));
  setCard('card-late', late > 0 ? 'warn' : '');
  setText('dead', fmtInt(dead));
  var reasons = objs(m.dead_letters_by_reason).length;
  setText('dead-sub', (reasons ? reasons + ' reason' + (reasons > 1 ? 's' : '') : 'records that failed') + delta(dead, prev && prev.dead));
  setCard('card-dead', dead > 0 ? 'bad' : '');
  state.prevCounts = { late: late, dead: dead, at: now };

  var c = m.checkpoints || {};
  setText('ckpt', fmtInt(c.completed) + ' / ' + fmtInt(c.failed));
  setText('ckpt-sub', c.last && typeof c.last === 'object' ? 'last ' + cid(c.last.id) + (isNum(c.last.age_ms) ? ' · ' + fmtDur(c.last.age_ms) + ' ago' : '') : 'completed / failed · none yet');
  setCard('card-ckpt', c.failed > 0 ? 'warn' : c.completed > 0 ? 'ok' : '');
}

// ---------- sparklines ----------
function renderSparks(m) {
  var h = m.history || {};
  var times = arr(h.time_ms);
  var span = times.length > 1 && isNum(times[0]) && isNum(times[times.length - 1]) ? times[times.length - 1] - times[0] : null;
  spark('spark-tp', arr(h.throughput), span, v => rate(v));
  spark('spark-wm', arr(h.watermark_lag_ms), span, fmtDur);
}

function spark(id, vals, span, fmt) {
  var root = $(id), svg = root.querySelector('svg');
  var W = 600, H = 80, P = 3;
  var nums = vals.filter(isNum);
  var cur = vals.length ? vals[vals.length - 1] : null;
  root.querySelector('.spark-cur').textContent = isNum(cur) ? fmt(cur) : '—';
  root.querySelector('.spark-from').textContent = span ? '−' + fmtUptime(span) : '';
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!nums.length) {
    root.querySelector('.spark-max').textContent = 'no data';
    root.querySelector('.spark-min').textContent = '';
    return;
  }
  var lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
  root.querySelector('.spark-max').textContent = 'max ' + fmt(hi);
  root.querySelector('.spark-min').textContent = 'min ' + fmt(lo);
  var base = Math.min(0, lo), range = hi - base || 1, n = vals.length;
  function X(i) { return n > 1 ? i / (n - 1) * W : W; }
  function Y(v) { return H - P - (v - base) / range * (H - 2 * P); }
  var runs = [], run = [];
  vals.forEach((v, i) => {
    if (isNum(v)) run.push([X(i), Y(v)]);
    else if (run.length) { runs.push(run); run = []; }
  });
  if (run.length) runs.push(run);
  runs.forEach(r => {
    if (r.length === 1) r.push([r[0][0] + 2, r[0][1]]);
    var pts = r.map(p => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ');
    svgEl('polygon', { points: r[0][0].toFixed(1) + ',' + H + ' ' + pts + ' ' + r[r.length - 1][0].toFixed(1) + ',' + H }, svg);
    svgEl('polyline', { points: pts, 'vector-effect': 'non-scaling-stroke' }, svg);
  });
}

// ---------- job graph ----------
var NW = 190, NH = 98, LGAP = 112, CGAP = 56, PAD = 16, TOP = 34;

function svgEl(tag, attrs, parent, text) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function trunc(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + '…' : s; }

// Layered left-to-right layout: longest-path layers, dummy nodes for long
// edges, barycenter ordering, then y positions by isotonic regression.
function layout(ops, edges) {
  var idx = {}, n = ops.length;
  ops.forEach((o, i) => { idx[o.id] = i; });
  var E = edges.filter(e => e && idx[e.from] != null && idx[e.to] != null && e.from !== e.to);
  var succ = ops.map(() => []), pred = ops.map(() => []);
  E.forEach(e => { succ[idx[e.from]].push(e); pred[idx[e.to]].push(e); });
  var indeg = pred.map(p => p.length), depth = ops.map(() => 0);
  var seen = ops.map(() => false), q = [], topo = [];
  for (var i = 0; i < n; i++) if (!indeg[i]) q.push(i);
  for (;;) {
    while (q.length) {
      var u = q.shift();
      if (seen[u]) continue;
      seen[u] = true; topo.push(u);
      succ[u].forEach(e => {
        var v = idx[e.to];
        if (seen[v]) return;
        depth[v] = Math.max(depth[v], depth[u] + 1);
        if (--indeg[v] <= 0) q.push(v);
      });
    }
    var rest = -1; // a cycle: force the least-blocked node
    for (i = 0; i < n; i++) if (!seen[i] && (rest < 0 || indeg[i] < indeg[rest])) rest = i;
    if (rest < 0) break;
    q.push(rest);
  }
  var taskSize = {}, grouped = ops.map(o => o.task != null && o.task !== '' ? o.task : null);
  grouped.forEach(t => { if (t !== null) taskSize[t] = (taskSize[t] || 0) + 1; });
  grouped = grouped.map(t => t !== null && taskSize[t] > 1);
  var nL = 0;
  depth.forEach(d => { nL = Math.max(nL, d + 1); });
  var layers = [];
  for (i = 0; i < nL; i++) layers.push([]);
  var nodes = ops.map((o, i) => {
    return { op: o, i: i, layer: depth[i], h: NH, real: true, up: [], down: [] };
  });
  topo.forEach(i => { layers[depth[i]].push(nodes[i]); });
  var paths = [];
  function link(a, b, w) { a.down.push({ n: b, w: w }); b.up.push({ n: a, w: w }); }
  E.forEach(e => {
    var a = nodes[idx[e.from]], b = nodes[idx[e.to]], w = e.kind === 'chained' ? 10 : 1;
    var path = [a];
    if (b.layer > a.layer) {
      var prev = a;
      for (var l = a.layer + 1; l < b.layer; l++) {
        var d = { layer: l, h: 12, real: false, up: [], down: [] };
        layers[l].push(d); link(prev, d, w); path.push(d); prev = d;
      }
      link(prev, b, w);
    }
    path.push(b);
    paths.push({ e: e, path: path, back: b.layer <= a.layer });
  });

  // ordering
  function setPos() { layers.forEach(L => { L.forEach((nd, k) => { nd.pos = k; }); }); }
  function crossings() {
    var c = 0;
    for (var l = 0; l + 1 < layers.length; l++) {
      var segs = [];
      layers[l].forEach(nd => { nd.down.forEach(d => { segs.push([nd.pos, d.n.pos]); }); });
      for (var a = 0; a < segs.length; a++) for (var b = a + 1; b < segs.length; b++)
        if ((segs[a][0] - segs[b][0]) * (segs[a][1] - segs[b][1]) < 0) c++;
    }
    return c;
  }
  setPos();
  var best = crossings(), bestOrder = layers.map(L => L.slice());
  for (var it = 0; it < 12 && best > 0; it++) {
    var down = it % 2 === 0;
    for (var k = 0; k < nL; k++) {
      var l = down ? k : nL - 1 - k, L = layers[l];
      L.forEach(nd => {
        var nb = down ? nd.up : nd.down, s = 0, w = 0;
        nb.forEach(x => { s += x.n.pos * x.w; w += x.w; });
        nd.bc = w ? s / w : nd.pos;
      });
      L.sort((a, b) => a.bc - b.bc || a.pos - b.pos);
      L.forEach((nd, j) => { nd.pos = j; });
    }
    var c = crossings();
    if (c < best) { best = c; bestOrder = layers.map(L => L.slice()); }
  }
  layers = bestOrder; setPos();

  // vertical placement
  function sep(a, b) { // room below a box for the bottleneck tag, above it for its task's label
    var g = a.real && b.real ? 24 + (grouped[b.i] ? 24 : 0) + (grouped[a.i] ? 10 : 0) : a.real || b.real ? 22 : 10;
    return a.h / 2 + b.h / 2 + g;
  }
  layers.forEach(L => {
    var y = 0;
    L.forEach((nd, j) => { if (j) y += sep(L[j - 1], nd); nd.y = y; });
  });
  // min sum w*(y-want)^2 s.t. y[j+1]-y[j] >= sep: weighted pool-adjacent-violators
  function place(L, want, wt) {
    var off = [0];
    for (var j = 1; j < L.length; j++) off[j] = off[j - 1] + sep(L[j - 1], L[j]);
    var blocks = [];
    want.forEach((v, j) => {
      blocks.push({ s: (v - off[j]) * wt[j], w: wt[j], c: 1 });
      while (blocks.length > 1) {
        var b = blocks[blocks.length - 1], a = blocks[blocks.length - 2];
        if (a.s / a.w <= b.s / b.w) break;
        a.s += b.s; a.w += b.w; a.c += b.c; blocks.pop();
      }
    });
    var j2 = 0;
    blocks.forEach(b => { for (var t = 0; t < b.c; t++, j2++) L[j2].y = b.s / b.w + off[j2]; });
  }
  for (it = 0; it < 16; it++) {
    for (k = 0; k < nL; k++) {
      var L2 = layers[it % 2 ? nL - 1 - k : k], wt = [];
      place(L2, L2.map((nd, j) => {
        var s = 0, w = 0, nb = it < 2 ? (it % 2 ? nd.down : nd.up) : nd.up.concat(nd.down);
        nb.forEach(x => { s += x.n.y * x.w; w += x.w; });
        wt[j] = w || 0.1;
        return w ? s / w : nd.y;
      }), wt);
    }
  }
  // straighten chained edges when the neighbours in the layer leave room
  // (pushing the other nodes of the layer aside, but never an already straightened one)
  var locked = [];
  function moveTo(nd, y) {
    var L = layers[nd.layer], ys = L.map(x => x.y), j;
    ys[nd.pos] = y;
    for (j = nd.pos + 1; j < L.length; j++) ys[j] = Math.max(ys[j], ys[j - 1] + sep(L[j - 1], L[j]));
    for (j = nd.pos - 1; j >= 0; j--) ys[j] = Math.min(ys[j], ys[j + 1] - sep(L[j], L[j + 1]));
    for (j = 0; j < L.length; j++) if (j !== nd.pos && Math.abs(ys[j] - L[j].y) > 0.5 && locked.indexOf(L[j]) >= 0) return false;
    L.forEach((x, j) => { x.y = ys[j]; });
    return true;
  }
  topo.forEach(i => {
    succ[i].forEach(e => {
      var a = nodes[i], b = nodes[idx[e.to]];
      if (e.kind !== 'chained' || b.layer !== a.layer + 1) return;
      if (Math.abs(a.y - b.y) < 0.5 || moveTo(b, a.y) || moveTo(a, b.y)) locked.push(a, b);
    });
  });
  var minY = Infinity, maxY = -Infinity;
  layers.forEach(L => { L.forEach(nd => { minY = Math.min(minY, nd.y - nd.h / 2); maxY = Math.max(maxY, nd.y + nd.h / 2); }); });
  if (!isFinite(minY)) { minY = 0; maxY = 0; }
  // a gap crossed only by chained edges carries no label: keep it narrow
  var wide = [], xs = [PAD];
  paths.forEach(p => {
    if (p.e.kind !== 'chained' && !p.back) for (var l = p.path[0].layer; l < p.path[p.path.length - 1].layer; l++) wide[l] = true;
  });
  for (var l = 1; l < nL; l++) xs[l] = xs[l - 1] + NW + (wide[l - 1] ? LGAP : CGAP);
  layers.forEach((L, l) => {
    L.forEach(nd => { nd.y = Math.round(nd.y - minY + TOP); nd.x = xs[l]; });
  });
  return {
    nodes: nodes, paths: paths,
    width: xs[Math.max(0, nL - 1)] + NW + PAD,
    height: Math.round(maxY - minY) + TOP + PAD + (paths.some(p => p.back) ? 44 : 0)
  };
}

var EDGE_LABEL = { keyed: 'hash', rebalance: 'rebalance', broadcast: 'broadcast', forward: 'forward' };

function renderGraph() {
  var job = state.job, wrap = $('graph');
  var ops = objs(job && job.operators).filter(o => o && o.id != null);
  var edges = objs(job && job.edges);
  var key = JSON.stringify([ops, edges]);
  if (key === state.graphKey) return;
  state.graphKey = key;
  state.nodes = {};
  wrap.innerHTML = '';
  if (!ops.length) { wrap.innerHTML = '<div class="empty">The job has no operators.</div>'; return; }
  var lay = layout(ops, edges);
  var svg = svgEl('svg', {
    viewBox: '0 0 ' + lay.width + ' ' + lay.height, width: lay.width, height: lay.height,
    role: 'img', 'aria-label': 'Job graph'
  }, null);
  svg.style.minWidth = Math.min(lay.width, Math.round(lay.width * 0.72)) + 'px';
  var gTasks = svgEl('g', { 'class': 'tasks' }, svg), gEdges = svgEl('g', { 'class': 'edges' }, svg);
  var gNodes = svgEl('g', { 'class': 'nodes' }, svg), gLabels = svgEl('g', { 'class': 'labels' }, svg);

  // task groups: union of padded boxes and hulls along chained edges, one solid fill
  var tasks = {}, order = [];
  lay.nodes.forEach(nd => {
    var t = nd.op.task;
    if (t == null || t === '') return;
    if (!tasks[t]) { tasks[t] = []; order.push(t); }
    tasks[t].push(nd);
  });
  function rectPts(nd) { // corners of the padded box (with room for the label) clockwise from top left
    var x0 = nd.x - 10, y0 = nd.y - NH / 2 - 24, x1 = nd.x + NW + 10, y1 = nd.y + NH / 2 + 10;
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
  }
  function hull(p, q) { // of two equal boxes, q right of p
    var a = rectPts(p), b = rectPts(q);
    return q.y >= p.y ? [a[0], a[1], b[1], b[2], b[3], a[3]] : [a[0], b[0], b[1], b[2], a[2], a[3]];
  }
  order.forEach(t => {
    var members = tasks[t];
    if (members.length < 2) return;
    var g = svgEl('g', { 'class': 'task', 'data-task': t }, gTasks);
    members.forEach(nd => {
      var r = rectPts(nd);
      svgEl('rect', { 'class': 'task-bg', x: r[0][0], y: r[0][1], width: NW + 20, height: NH + 34, rx: 12 }, g);
    });
    lay.paths.forEach(p => {
      var a = p.path[0], b = p.path[p.path.length - 1];
      if (p.e.kind !== 'chained' || a.op.task !== t || b.op.task !== t || p.back) return;
      for (var i = 0; i + 1 < p.path.length; i++) {
        var h = hull(p.path[i], p.path[i + 1]);
        svgEl('polygon', { 'class': 'task-bg', points: h.map(q => q.join(',')).join(' ') }, g);
      }
    });
    var first = members.slice().sort((a, b) => a.x - b.x || a.y - b.y)[0];
    var par = first.op.parallelism;
    svgEl('text', { 'class': 'task-label', x: first.x, y: first.y - NH / 2 - 8 },
      g, 'task ' + trunc(t, 28) + (isNum(par) ? ' ×' + par : '') + ' · chained');
  });

  // ports: spread edge ends along the box sides, ordered by the other end's y
  var outs = {}, ins = {};
  lay.paths.forEach(p => {
    var a = p.path[0], b = p.path[p.path.length - 1];
    (outs[a.op.id] = outs[a.op.id] || []).push(p);
    (ins[b.op.id] = ins[b.op.id] || []).push(p);
  });
  function spread(list, end) {
    list.sort((p, q) => end(p).y - end(q).y);
    var n = list.length, step = n > 1 ? Math.min(16, (NH - 24) / (n - 1)) : 0;
    return list.map((p, i) => (i - (n - 1) / 2) * step);
  }
  Object.keys(outs).forEach(id => {
    var l = outs[id], off = spread(l, p => p.path[1]);
    l.forEach((p, i) => { p.y0 = off[i]; });
  });
  Object.keys(ins).forEach(id => {
    var l = ins[id], off = spread(l, p => p.path[p.path.length - 2]);
    l.forEach((p, i) => { p.y1 = off[i]; });
  });

  var placed = [], q0, q1, cm;
  lay.paths.forEach(p => {
    var a = p.path[0], b = p.path[p.path.length - 1], kind = String(p.e.kind || 'forward');
    var cls = 'k-' + kind.replace(/[^a-z_-]/gi, '');
    var d, lx, ly;
    var sx = a.x + NW, sy = a.y + p.y0, tx = b.x - 7, ty = b.y + p.y1;
    if (p.back) { // cycle edge: loop under the boxes
      var by = Math.max(a.y, b.y) + NH / 2 + 30;
      d = 'M' + sx + ',' + sy + ' C' + (sx + 60) + ',' + by + ' ' + (tx - 60) + ',' + by + ' ' + tx + ',' + ty;
      lx = (sx + tx) / 2; ly = by - 8;
    } else {
      var pts = [[sx, sy]];
      for (var i = 1; i < p.path.length - 1; i++) { pts.push([p.path[i].x, p.path[i].y]); pts.push([p.path[i].x + NW, p.path[i].y]); }
      pts.push([tx, ty]);
      d = 'M' + pts[0][0] + ',' + pts[0][1];
      for (i = 0; i + 1 < pts.length; i++) {
        var p0 = pts[i], p1 = pts[i + 1];
        if (i % 2 === 1) { d += ' L' + p1[0] + ',' + p1[1]; continue; }
        var mx = (p0[0] + p1[0]) / 2;
        d += ' C' + mx + ',' + p0[1] + ' ' + mx + ',' + p1[1] + ' ' + p1[0] + ',' + p1[1];
      }
      lx = (pts[0][0] + pts[1][0]) / 2; ly = (pts[0][1] + pts[1][1]) / 2;
      q0 = pts[0]; q1 = pts[1]; cm = (q0[0] + q1[0]) / 2;
    }
    svgEl('path', { 'class': 'edge ' + cls, d: d }, gEdges);
    svgEl('path', { 'class': 'arrow ' + cls, d: 'M' + (tx + 7) + ',' + ty + ' l-9,-5 v10 z' }, gEdges);
    if (kind !== 'chained') {
      var label = EDGE_LABEL[kind] || kind;
      var w = label.length * 6.2 + 12;
      if (!p.back) { // slide along the first curve to the spot clearest of the labels placed so far
        var bestS = Infinity, tries = [0.5, 0.35, 0.65, 0.25, 0.75, 0.42, 0.58, 0.8, 0.2];
        var pref = outs[a.op.id].length > 2 ? 0.75 : ins[b.op.id].length > 2 ? 0.25 : 0.5;
        tries.forEach(t => {
          var u = 1 - t;
          var bx = u * u * u * q0[0] + 3 * u * t * cm + t * t * t * q1[0];
          var byy = (u * u * u + 3 * u * u * t) * q0[1] + (3 * u * t * t + t * t * t) * q1[1];
          var sc = Math.max(0, q0[0] + 2 - (bx - w / 2)) * 40 + Math.max(0, bx + w / 2 - q1[0] + 2) * 40 + Math.abs(t - pref) * 4;
          placed.forEach(r => {
            sc += Math.max(0, (r[2] + w) / 2 + 3 - Math.abs(r[0] - bx)) * Math.max(0, 20 - Math.abs(r[1] - byy));
          });
          if (sc < bestS) { bestS = sc; lx = bx; ly = byy; }
        });
      }
      placed.push([lx, ly, w]);
      var lg = svgEl('g', { 'class': 'elabel ' + cls, transform: 'translate(' + Math.round(lx) + ',' + Math.round(ly) + ')' }, gLabels);
      svgEl('rect', { x: -w / 2, y: -9, width: w, height: 17, rx: 8 }, lg);
      svgEl('text', { x: 0, y: 4, 'text-anchor': 'middle' }, lg, label);
    }
  });

  lay.nodes.forEach(nd => {
    var o = nd.op, kind = kindOf(o);
    var g = svgEl('g', {
      'class': 'op bp-na', 'data-operator': String(o.name), 'data-kind': kind,
      transform: 'translate(' + nd.x + ',' + (nd.y - NH / 2) + ')', tabindex: 0
    }, gNodes);
    var title = svgEl('title', {}, g, String(o.name));
    svgEl('rect', { 'class': 'op-box', width: NW, height: NH, rx: 8 }, g);
    var name = svgEl('text', { 'class': 'op-name', x: 12, y: 20 }, g, String(o.name));
    var parT = svgEl('text', { 'class': 'op-par', x: NW - 12, y: 20, 'text-anchor': 'end' }, g, isNum(o.parallelism) ? '×' + o.parallelism : '');
    svgEl('text', { 'class': 'op-kind', x: 12, y: 34 }, g, kind.toUpperCase());
    var bn = svgEl('g', { 'class': 'op-bn', transform: 'translate(' + (NW - 10) + ',' + (NH + 4) + ')', visibility: 'hidden' }, g);
    svgEl('rect', { x: -116, y: -11, width: 116, height: 17, rx: 8.5 }, bn);
    svgEl('text', { x: -58, y: 1, 'text-anchor': 'middle' }, bn, '⚠ likely bottleneck');
    var tp = svgEl('text', { 'class': 'op-tp', x: 12, y: 60, 'data-field': 'throughput' }, g, '—');
    var tpl = svgEl('text', { 'class': 'op-tpl', x: 80, y: 60 }, g, kind === 'sink' ? 'records in' : 'records out');
    var wm = svgEl('text', { 'class': 'op-wm', x: 12, y: 78, 'data-field': 'watermark-lag' }, g, '');
    var bpt = svgEl('text', { 'class': 'op-bpt', x: NW - 12, y: 78, 'text-anchor': 'end', 'data-field': 'backpressure' }, g, 'bp —');
    svgEl('rect', { 'class': 'bar-bg', x: 12, y: 85, width: NW - 24, height: 5, rx: 2.5 }, g);
    var bar = svgEl('rect', { 'class': 'bar-fg', x: 12, y: 85, width: 0, height: 5, rx: 2.5 }, g);
    g.addEventListener('click', () => { focusRow(o.id); });
    g.addEventListener('keydown', ev => { if (ev.key === 'Enter') focusRow(o.id); });
    state.nodes[o.id] = { name: name, par: parT, g: g, title: title, tp: tp, tpl: tpl, wm: wm, bar: bar, bpt: bpt, bn: bn, op: o };
  });
  wrap.appendChild(svg);
  Object.keys(state.nodes).forEach(id => { // shorten names that do not fit
    var n = state.nodes[id], full = String(n.op.name), len = full.length;
    try {
      var room = NW - 30 - n.par.getComputedTextLength();
      while (len > 3 && n.name.getComputedTextLength() > room) n.name.textContent = full.slice(0, --len) + '…';
    } catch (e) { if (len > 20) n.name.textContent = trunc(full, 20); }
  });
  if (state.metrics) updateGraph(objs(state.metrics.operators), state.metrics);
}

function metricsById(ops) {
  var byId = {}, byName = {};
  ops.forEach(m => { if (m) { byId[m.id] = m; byName[m.name] = m; } });
  return op => byId[op.id] || byName[op.name] || null;
}

// an operator that is not blocked itself but whose upstream is: the likely bottleneck
function bottlenecks(m) {
  var res = {}, cand = {}, job = state.job;
  if (!job) return res;
  var get = metricsById(objs(m.operators));
  objs(job.edges).forEach(e => {
    if (!e || e.kind === 'chained') return;
    var from = null, to = null;
    objs(job.operators).forEach(o => { if (o.id === e.from) from = o; if (o.id === e.to) to = o; });
    if (!from || !to) return;
    var mf = get(from), mt = get(to);
    if (!mf || !mt) return;
    var bf = opBackpressure(mf), bt = opBackpressure(mt);
    if (isNum(bf) && bf >= 0.5 && (!isNum(bt) || bt < 0.5)) (cand[from.id] = cand[from.id] || []).push({ id: to.id, q: mt.queue_fill });
  });
  // of several unblocked consumers of a blocked operator, the ones with a full input queue
  Object.keys(cand).forEach(k => {
    var c = cand[k], full = c.filter(x => x.q >= 0.5);
    (full.length ? full : c).forEach(x => { res[x.id] = true; });
  });
  return res;
}

function updateGraph(ops, m) {
  var get = metricsById(ops), bn = bottlenecks(m);
  Object.keys(state.nodes).forEach(id => {
    var n = state.nodes[id], o = n.op, x = get(o) || {}, kind = kindOf(o);
    var v = kind === 'sink' ? x.in_per_s : x.out_per_s;
    var t = rate(v);
    if (n.tp.textContent !== t) n.tp.textContent = t;
    n.tp.setAttribute('data-value', isNum(v) ? String(v) : '');
    var w = t.length * 9.6;
    try { w = n.tp.getComputedTextLength() || w; } catch (e) { /* not rendered */ }
    n.tpl.setAttribute('x', String(Math.round(17 + w)));
    var lag = x.watermark_lag_ms;
    n.wm.textContent = isNum(lag) ? 'wm lag ' + fmtDur(lag) : (x.watermark_ms == null ? 'no wm' : '');
    n.wm.setAttribute('class', 'op-wm' + (isNum(lag) && lag > 60000 ? ' lagging' : ''));
    var bp = opBackpressure(x), c = bpClass(bp);
    n.g.setAttribute('class', 'op bp-' + c);
    n.bar.setAttribute('width', String(isNum(bp) ? Math.round(Math.max(0, Math.min(1, bp)) * (NW - 24)) : 0));
    n.bpt.textContent = 'bp ' + pct(bp);
    n.bn.setAttribute('visibility', bn[o.id] ? 'visible' : 'hidden');
    n.title.textContent = o.name + ' (' + kind + ', parallelism ' + (o.parallelism != null ? o.parallelism : '?') +
      (o.task != null ? ', task ' + o.task : '') + ')\nin ' + rate(x.in_per_s) + ' · out ' + rate(x.out_per_s) +
      '\nwatermark ' + (iso(x.watermark_ms) || '—') + ' · lag ' + fmtDur(lag) +
      '\nbackpressure ' + pct(bp) + ' · queue ' + pct(x.queue_fill) +
      (bn[o.id] ? '\nupstream is backpressured while this operator is not: likely the bottleneck' : '');
  });
}

// ---------- tables ----------
function focusRow(id) {
  state.expanded[id] = true;
  if (state.metrics) renderOps(objs(state.metrics.operators), state.metrics);
  var row = document.querySelector('#ops tr[data-id="' + CSS.escape(String(id)) + '"]');
  if (row) {
    row.scrollIntoView({ block: 'center', behavior: 'smooth' });
    row.classList.remove('flash'); void row.offsetWidth; row.classList.add('flash');
  }
}

function opCells(x, ref) {
  var late = x.late_records, dead = x.dead_letters;
  return '<td>' + fmtInt(x.records_in) + '</td><td>' + fmtInt(x.records_out) + '</td>' +
    '<td>' + rate(x.in_per_s) + '</td><td>' + rate(x.out_per_s) + '</td>' +
    '<td>' + timeCell(x.watermark_ms, ref) + '</td><td' + (x.watermark_lag_ms > 60000 ? ' class="warn"' : '') + '>' + fmtDur(x.watermark_lag_ms) + '</td>' +
    '<td class="l">' + barCell(x.backpressure) + '</td>' +
    '<td class="' + (x.queue_fill >= 0.9 ? 'high' : x.queue_fill >= 0.5 ? 'warn' : '') + '">' + pct(x.queue_fill) + '</td>' +
    '<td' + (late > 0 ? ' class="nz"' : '') + '>' + fmtInt(late) + '</td>' +
    '<td' + (dead > 0 ? ' class="nz"' : '') + '>' + fmtInt(dead) + '</td>' +
    '<td>' + (x.state_entries == null && x.state_bytes == null ? '—' : fmtInt(x.state_entries) + ' · ' + fmtBytes(x.state_bytes)) + '</td>';
}

function renderOps(ops, m) {
  var tbody = $('ops').tBodies[0];
  var graphOps = objs(state.job && state.job.operators), info = {};
  graphOps.forEach(o => { info[o.id] = o; });
  if (!ops.length) { tbody.innerHTML = '<tr><td colspan="13" class="empty">No operators reported</td></tr>'; return; }
  var html = '';
  ops.forEach(x => {
    if (!x) return;
    var g = info[x.id] || {}, subs = objs(x.subtasks), open = !!state.expanded[x.id];
    var par = isNum(g.parallelism) ? g.parallelism : subs.length || null;
    var bp = opBackpressure(x);
    html += '<tr class="op-row" data-id="' + esc(x.id) + '"><td class="l"><span class="caret">' + (subs.length ? (open ? '▾' : '▸') : '') +
      '</span><b>' + esc(x.name) + '</b><span class="kind">' + esc(g.kind || '') + '</span></td>' +
      '<td>' + (par == null ? '—' : esc(par)) + '</td>' + opCells(Object.assign({}, x, { backpressure: bp }), m.time_ms) + '</tr>';
    if (open) subs.forEach(s => {
      html += '<tr class="sub"><td class="l">subtask ' + esc(s.subtask) + '</td><td></td>' + opCells(s, m.time_ms) + '</tr>';
    });
  });
  tbody.innerHTML = html;
}

function renderSources(m) {
  var tbody = $('sources').tBodies[0], list = objs(m.sources);
  if (!list.length) { tbody.innerHTML = '<tr><td colspan="6" class="empty">No source partitions reported</td></tr>'; setText('src-sum', ''); return; }
  var html = '', grow = {}, counts = { active: 0, idle: 0, finished: 0 };
  list.forEach(s => {
    var key = s.operator + '\u0000' + s.partition, prev = state.prevSrcLag[key];
    // growing for this many consecutive polls
    var g = isNum(s.lag) && isNum(prev) && s.lag > prev ? (state.srcGrow[key] || 0) + 1 : (isNum(s.lag) && s.lag === prev ? state.srcGrow[key] || 0 : 0);
    grow[key] = g;
    var st = String(s.status || '');
    if (counts[st] != null) counts[st]++;
    html += '<tr><td class="l">' + esc(s.operator) + '</td><td>' + esc(s.partition) + '</td><td>' + fmtInt(s.position) + '</td>' +
      '<td' + (g >= 2 ? ' class="grow" title="lag has grown for ' + g + ' polls"' : g === 1 ? ' class="warn" title="lag grew since the last poll"' : '') + '>' +
      fmtInt(s.lag) + (g ? ' ▲' : '') + '</td><td>' + timeCell(s.watermark_ms, m.time_ms) + '</td>' +
      '<td class="l"><span class="pill ' + esc(st.replace(/[^a-z]/gi, '')) + '">' + esc(st || '—') + '</span></td></tr>';
    state.prevSrcLag[key] = s.lag;
  });
  state.srcGrow = grow;
  tbody.innerHTML = html;
  setText('src-sum', list.length + ' partitions · ' + counts.active + ' active' + (counts.idle ? ' · ' + counts.idle + ' idle' : '') + (counts.finished ? ' · ' + counts.finished + ' finished' : ''));
}

function renderCheckpoints(c) {
  if (!c || typeof c !== 'object') c = {};
  var last = c.last && typeof c.last === 'object' ? c.last : null;
  var kv = [
    ['Completed', fmtInt(c.completed)], ['Failed', fmtInt(c.failed), c.failed > 0 ? 'bad' : ''],
    ['Last ID', last ? cid(last.id) + (last.is_final ? ' (final)' : '') : '—'], ['Age', last && isNum(last.age_ms) ? fmtDur(last.age_ms) + ' ago' : '—'],
    ['Duration', last ? fmtDur(last.duration_ms) : '—'], ['Alignment', last ? fmtDur(last.alignment_ms) : '—'],
    ['Size', last ? fmtBytes(last.size_bytes) : '—'], ['New (incremental)', last ? fmtBytes(last.new_bytes) : '—']
  ];
  $('ckpt-kv').innerHTML = kv.map(r => {
    return '<div><dt>' + esc(r[0]) + '</dt><dd' + (r[2] ? ' class="' + r[2] + '"' : '') + '>' + esc(r[1]) + '</dd></div>';
  }).join('');
  var recent = objs(c.recent).slice().sort((a, b) => (b.id || 0) - (a.id || 0)).slice(0, 10);
  $('ckpt-recent').tBodies[0].innerHTML = recent.length ? recent.map(r => {
    return '<tr><td>' + esc(cid(r.id)) + '</td><td>' + fmtDur(r.age_ms) + '</td><td>' + fmtDur(r.duration_ms) + '</td><td>' + fmtDur(r.alignment_ms) +
      '</td><td>' + fmtBytes(r.size_bytes) + '</td><td>' + fmtBytes(r.new_bytes) + '</td><td class="l">' + (r.is_final ? 'final' : '') + '</td></tr>';
  }).join('') : '<tr><td colspan="7" class="empty">No completed checkpoint yet</td></tr>';
  var ab = objs(c.aborted);
  $('ckpt-aborted').innerHTML = ab.length ? '<h3>Aborted</h3><ul class="aborted">' + ab.slice(-10).reverse().map(a => {
    return '<li><b>' + esc(cid(a.id)) + '</b>' + esc(a.reason || 'no reason given') + '</li>';
  }).join('') + '</ul>' : '';
}

function renderDead(m, ops) {
  var by = objs(m.dead_letters_by_reason).slice().sort((a, b) => (b.count || 0) - (a.count || 0));
  $('dl-reasons').tBodies[0].innerHTML = by.length ? by.map(r => {
    return '<tr><td class="l">' + esc(r.operator) + '</td><td class="l wrap">' + esc(r.reason) + '</td><td>' + fmtInt(r.count) + '</td></tr>';
  }).join('') : '<tr><td colspan="3" class="empty">No dead letters</td></tr>';
  var lateOps = ops.filter(o => o && (o.late_records > 0 || o.dead_letters > 0));
  $('late-ops').tBodies[0].innerHTML = lateOps.length ? lateOps.map(o => {
    return '<tr><td class="l">' + esc(o.name) + '</td><td' + (o.late_records > 0 ? ' class="nz"' : '') + '>' + fmtInt(o.late_records) +
      '</td><td' + (o.dead_letters > 0 ? ' class="nz"' : '') + '>' + fmtInt(o.dead_letters) + '</td></tr>';
  }).join('') : '<tr><td colspan="3" class="empty">No late records or dead letters</td></tr>';
  var recent = objs(m.recent_dead_letters).slice().sort((a, b) => (b.at_ms || 0) - (a.at_ms || 0)).slice(0, 20);
  $('dl-recent').tBodies[0].innerHTML = recent.length ? recent.map(d => {
    var rec = d.record == null ? '' : typeof d.record === 'string' ? d.record : JSON.stringify(d.record);
    var where = [d.partition != null ? 'p' + d.partition : null, d.offset != null ? String(d.offset) : null].filter(Boolean).join(' / ');
    return '<tr><td class="l">' + timeCell(d.at_ms, m.time_ms) + '</td><td class="l">' + esc(d.operator) + '</td><td class="l wrap">' + esc(d.reason) +
      '</td><td class="l"><code class="rec" title="' + esc(rec) + '">' + esc(trunc(rec, 160)) + '</code></td><td class="l mono">' + esc(where || '—') +
      '</td><td class="l">' + timeCell(d.timestamp_ms, m.time_ms) + '</td></tr>';
  }).join('') : '<tr><td colspan="6" class="empty">No dead letters</td></tr>';
  var late = isNum(m.late_records) ? m.late_records : 0, dead = isNum(m.dead_letters) ? m.dead_letters : 0;
  setText('dl-sum', fmtInt(late) + ' late · ' + fmtInt(dead) + ' dead letters');
}

// ---------- start ----------
$('ops').tBodies[0].addEventListener('click', ev => {
  var tr = ev.target.closest('tr.op-row');
  if (!tr || (window.getSelection && String(window.getSelection()))) return;
  var id = tr.getAttribute('data-id');
  var key = isNaN(Number(id)) ? id : Number(id);
  state.expanded[key] = !state.expanded[key];
  if (state.metrics) renderOps(objs(state.metrics.operators), state.metrics);
});
setInterval(tick, 500);
loadJob();
poll();
})();
