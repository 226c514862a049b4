/*
 * "Try the model": loads the run's latest saved model (/model/model.json, TensorFlow.js layers format) into
 * TensorFlow.js in the browser (/vendor/tf.min.js, served from node_modules: nothing from a CDN) and classifies a
 * digit drawn on the canvas with the mouse, or an image file dropped on it. Shows the top-3 classes with their
 * probabilities, and the class names the model carries (model.json's userDefinedMetadata.ringtrain.classNames).
 *
 * Preprocessing follows the model's metadata (pixel / 255, NHWC). A drawing is made MNIST-like: the strokes'
 * bounding box is scaled into a 20x20 box and centred by its centre of mass in the model's input (28x28 for MNIST),
 * white on black. A dropped image is scaled to the input size; for one-channel models it is turned to grey and, when
 * it is dark-on-light, inverted.
 */
/* global tf */
(() => {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const query = (() => {
    const run = new URLSearchParams(location.search).get('run');
    return run === null ? '' : `?run=${encodeURIComponent(run)}`;
  })();
  const state = { model: null, classNames: [], shape: null, drawing: false, last: null, status: 'none' };

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.appendChild(s);
    });
  }

  async function loadModel() {
    const files = await (await fetch(`/api/files${query}`, { cache: 'no-store' })).json();
    if (!files.model) return false;
    const json = await (await fetch(`/model/model.json${query}`, { cache: 'no-store' })).json();
    $('model-card').hidden = false;
    await loadScript('/vendor/tf.min.js');
    await tf.setBackend('cpu');
    const model = await tf.loadLayersModel(`/model/model.json${query}`, {
      weightUrlConverter: async (name) => `/model/${name.replace(/^\.\//, '')}${query}`,
    });
    const shape = model.inputs[0].shape.slice(1);
    const classes = model.outputs[0].shape[1];
    const meta = (json.userDefinedMetadata && json.userDefinedMetadata.ringtrain) || {};
    state.classNames =
      Array.isArray(meta.classNames) && meta.classNames.length === classes
        ? meta.classNames.map(String)
        : Array.from({ length: classes }, (_, i) => String(i));
    state.model = model;
    state.shape = shape;
    const acc = typeof meta.testAccuracy === 'number' ? `, test accuracy ${(100 * meta.testAccuracy).toFixed(2)}%` : '';
    $('model-info').textContent =
      `${model.name || 'model'}: input ${shape.join('×')}, ${classes} classes, ` +
      `${model.countParams().toLocaleString('en-US')} parameters${acc}`;
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // The canvas

  function clearCanvas() {
    const c = $('digit-canvas');
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, c.width, c.height);
    $('predictions').replaceChildren();
    state.drawn = false;
  }

  function pointer(e) {
    const c = $('digit-canvas');
    const r = c.getBoundingClientRect();
    return { x: ((e.clientX - r.left) * c.width) / r.width, y: ((e.clientY - r.top) * c.height) / r.height };
  }

  function stroke(from, to) {
    const ctx = $('digit-canvas').getContext('2d');
    ctx.strokeStyle = '#fff';
    ctx.lineWidth = 22;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
  }

  function watchCanvas() {
    const c = $('digit-canvas');
    c.addEventListener('pointerdown', (e) => {
      state.drawing = true;
      state.last = pointer(e);
      stroke(state.last, state.last);
      c.setPointerCapture?.(e.pointerId);
    });
    c.addEventListener('pointermove', (e) => {
      if (!state.drawing) return;
      const p = pointer(e);
      stroke(state.last, p);
      state.last = p;
    });
    const end = () => {
      if (!state.drawing) return;
      state.drawing = false;
      state.drawn = true;
      void classify(drawingInput());
    };
    c.addEventListener('pointerup', end);
    c.addEventListener('pointerleave', end);
    c.addEventListener('dragover', (e) => e.preventDefault());
    c.addEventListener('drop', (e) => {
      e.preventDefault();
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) void classifyFile(file);
    });
    $('digit-clear').addEventListener('click', clearCanvas);
  }

  // ---------------------------------------------------------------------------------------------
  // Turning pixels into the model's input

  /** The drawing as MNIST does it: the strokes fit in a 20x20 box, centred by mass in the input. */
  function drawingInput() {
    const [h, w, ch] = state.shape;
    const c = $('digit-canvas');
    const src = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let [x0, y0, x1, y1] = [c.width, c.height, -1, -1];
    for (let y = 0; y < c.height; y++) {
      for (let x = 0; x < c.width; x++) {
        if (src[(y * c.width + x) * 4] > 32)
          [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
      }
    }
    if (x1 < 0) return null;
    const box = Math.round(Math.min(h, w) * (20 / 28));
    const scale = box / Math.max(x1 - x0 + 1, y1 - y0 + 1);
    const [bw, bh] = [Math.max(1, Math.round((x1 - x0 + 1) * scale)), Math.max(1, Math.round((y1 - y0 + 1) * scale))];
    const small = document.createElement('canvas');
    [small.width, small.height] = [bw, bh];
    const sctx = small.getContext('2d');
    sctx.imageSmoothingQuality = 'high';
    sctx.drawImage(c, x0, y0, x1 - x0 + 1, y1 - y0 + 1, 0, 0, bw, bh);
    const px = sctx.getImageData(0, 0, bw, bh).data;
    let [mass, mx, my] = [0, 0, 0];
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) {
        const v = px[(y * bw + x) * 4];
        [mass, mx, my] = [mass + v, mx + v * x, my + v * y];
      }
    }
    const ox = Math.round(w / 2 - (mass > 0 ? mx / mass : bw / 2));
    const oy = Math.round(h / 2 - (mass > 0 ? my / mass : bh / 2));
    const input = new Float32Array(h * w * ch);
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) {
        const [tx, ty] = [x + ox, y + oy];
        if (tx < 0 || ty < 0 || tx >= w || ty >= h) continue;
        for (let k = 0; k < ch; k++) input[(ty * w + tx) * ch + k] = px[(y * bw + x) * 4 + Math.min(k, 2)] / 255;
      }
    }
    return input;
  }

  /** An image scaled to the input; grey (and inverted when dark on light) for one-channel models. */
  function imageInput(image) {
    const [h, w, ch] = state.shape;
    const small = document.createElement('canvas');
    [small.width, small.height] = [w, h];
    const ctx = small.getContext('2d');
    ctx.drawImage(image, 0, 0, w, h);
    $('digit-canvas').getContext('2d').drawImage(image, 0, 0, $('digit-canvas').width, $('digit-canvas').height);
    const px = ctx.getImageData(0, 0, w, h).data;
    const input = new Float32Array(h * w * ch);
    let sum = 0;
    for (let i = 0; i < w * h; i++) {
      if (ch === 1) sum += input[i] = (px[i * 4] * 0.299 + px[i * 4 + 1] * 0.587 + px[i * 4 + 2] * 0.114) / 255;
      else for (let k = 0; k < ch; k++) input[i * ch + k] = px[i * 4 + Math.min(k, 2)] / 255;
    }
    if (ch === 1 && sum / (w * h) > 0.5) for (let i = 0; i < input.length; i++) input[i] = 1 - input[i];
    return input;
  }

  async function classifyFile(file) {
    if (!state.model) return;
    const url = URL.createObjectURL(file);
    try {
      const image = new Image();
      image.src = url;
      await image.decode();
      await classify(imageInput(image));
    } catch (err) {
      showError(`cannot read ${file.name}: ${err.message}`);
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Predictions

  async function classify(input) {
    if (!state.model || !input) return;
    const probs = tf.tidy(() => state.model.predict(tf.tensor(input, [1, ...state.shape])).dataSync());
    const top = Array.from(probs, (p, i) => ({ i, p }))
      .sort((a, b) => b.p - a.p)
      .slice(0, 3);
    const items = top.map(({ i, p }) => {
      const li = document.createElement('li');
      li.dataset.class = String(i);
      const name = document.createElement('span');
      name.className = 'cls';
      name.textContent = state.classNames[i];
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = `${(100 * p).toFixed(1)}%`;
      const pct = document.createElement('span');
      pct.className = 'p';
      pct.textContent = `${(100 * p).toFixed(1)}%`;
      li.append(name, bar, pct);
      return li;
    });
    $('predictions').replaceChildren(...items);
    window.__ringtrainPrediction = top.map(({ i, p }) => ({ index: i, name: state.classNames[i], p }));
  }

  function showError(text) {
    const li = document.createElement('li');
    li.className = 'error';
    li.textContent = text;
    $('predictions').replaceChildren(li);
  }

  if (document.getElementById('ringtrain-data')) return;
  clearCanvas();
  watchCanvas();
  loadModel()
    .then((ok) => {
      state.status = ok ? 'ready' : 'none';
    })
    .catch((err) => {
      state.status = 'failed';
      $('model-info').textContent = `the model did not load: ${err.message}`;
    })
    .finally(() => {
      window.__ringtrainModel = state.status;
    });
})();
