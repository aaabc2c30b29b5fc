// A 280x280 drawing pad and the MNIST preprocessing of what is drawn on it: the ink's bounding box is
// scaled (area-averaged, aspect kept) to fit 20x20, then placed in a 28x28 frame so that its centre
// of mass sits at the centre, as the MNIST digits were prepared.

const SIZE = 28;
const BOX = 20;

export class DigitPad {
  constructor(canvas, preview, { lineWidth = 22, onStroke = () => {} } = {}) {
    this.canvas = canvas;
    this.preview = preview;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.lineWidth = lineWidth;
    this.onStroke = onStroke;
    this.drawing = false;
    this.inked = false;
    this.last = null;
    this.clear();
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      canvas.addEventListener(type, () => this.up());
    }
  }

  point(event) {
    const rect = this.canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * this.canvas.width) / rect.width,
      y: ((event.clientY - rect.top) * this.canvas.height) / rect.height,
    };
  }

  down(event) {
    if (event.button !== undefined && event.button !== 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture?.(event.pointerId);
    this.drawing = true;
    this.last = this.point(event);
    const { ctx } = this;
    ctx.beginPath();
    ctx.arc(this.last.x, this.last.y, this.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    this.inked = true;
  }

  move(event) {
    if (!this.drawing) return;
    event.preventDefault();
    const p = this.point(event);
    const { ctx } = this;
    ctx.beginPath();
    ctx.moveTo(this.last.x, this.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    this.last = p;
  }

  up() {
    if (!this.drawing) return;
    this.drawing = false;
    this.last = null;
    this.renderPreview(this.pixels());
    this.onStroke();
  }

  clear() {
    const { ctx, canvas } = this;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#fff";
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = this.lineWidth;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    this.inked = false;
    this.renderPreview(null);
  }

  isEmpty() {
    return !this.inked;
  }

  /** 784 numbers in [0, 1] (row-major 28x28, ink = 1), or null when nothing is drawn. */
  pixels() {
    const { width, height } = this.canvas;
    const rgba = this.ctx.getImageData(0, 0, width, height).data;
    const gray = new Float32Array(width * height);
    let x0 = width, y0 = height, x1 = -1, y1 = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const v = rgba[(y * width + x) * 4] / 255;
        gray[y * width + x] = v;
        if (v > 0.1) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
    }
    if (x1 < 0) return null;
    const w = x1 - x0 + 1;
    const h = y1 - y0 + 1;
    const scale = BOX / Math.max(w, h);
    const tw = Math.max(1, Math.round(w * scale));
    const th = Math.max(1, Math.round(h * scale));
    const box = areaResample(gray, width, x0, y0, w, h, tw, th);

    // centre of mass of the box, in pixel units
    let mass = 0, mx = 0, my = 0;
    for (let y = 0; y < th; y++) {
      for (let x = 0; x < tw; x++) {
        const v = box[y * tw + x];
        mass += v;
        mx += (x + 0.5) * v;
        my += (y + 0.5) * v;
      }
    }
    const cx = mass > 0 ? mx / mass : tw / 2;
    const cy = mass > 0 ? my / mass : th / 2;
    const ox = clamp(Math.round(SIZE / 2 - cx), 0, SIZE - tw);
    const oy = clamp(Math.round(SIZE / 2 - cy), 0, SIZE - th);

    const out = new Array(SIZE * SIZE).fill(0);
    for (let y = 0; y < th; y++) {
      for (let x = 0; x < tw; x++) {
        out[(oy + y) * SIZE + (ox + x)] = Math.round(clamp(box[y * tw + x], 0, 1) * 1e4) / 1e4;
      }
    }
    return out;
  }

  renderPreview(pixels) {
    if (!this.preview) return;
    const ctx = this.preview.getContext("2d");
    const image = ctx.createImageData(SIZE, SIZE);
    for (let i = 0; i < SIZE * SIZE; i++) {
      const v = pixels ? Math.round(pixels[i] * 255) : 0;
      image.data[i * 4] = image.data[i * 4 + 1] = image.data[i * 4 + 2] = v;
      image.data[i * 4 + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }
}

function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/** Area-average the w x h region at (x0, y0) of `gray` (row stride `stride`) down to tw x th. */
function areaResample(gray, stride, x0, y0, w, h, tw, th) {
  const sx = w / tw;
  const sy = h / th;
  const out = new Float32Array(tw * th);
  for (let ty = 0; ty < th; ty++) {
    const a = ty * sy;
    const b = a + sy;
    for (let tx = 0; tx < tw; tx++) {
      const c = tx * sx;
      const d = c + sx;
      let sum = 0;
      for (let y = Math.floor(a); y < Math.min(h, Math.ceil(b)); y++) {
        const wy = Math.min(b, y + 1) - Math.max(a, y);
        if (wy <= 0) continue;
        const row = (y0 + y) * stride + x0;
        for (let x = Math.floor(c); x < Math.min(w, Math.ceil(d)); x++) {
          const wx = Math.min(d, x + 1) - Math.max(c, x);
          if (wx > 0) sum += gray[row + x] * wx * wy;
        }
      }
      out[ty * tw + tx] = sum / (sx * sy);
    }
  }
  return out;
}
