/** Small dense float64 linear algebra for exact LoRA aggregation: row-major matrices, QR and one-sided Jacobi SVD. */

export interface Mat {
  rows: number;
  cols: number;
  data: Float64Array; // row-major
}

export function mat(rows: number, cols: number, data?: Float64Array): Mat {
  return { rows, cols, data: data ?? new Float64Array(rows * cols) };
}

export function matmul(a: Mat, b: Mat): Mat {
  const out = mat(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const aik = a.data[i * a.cols + k]!;
      if (aik === 0) continue;
      for (let j = 0; j < b.cols; j++) out.data[i * b.cols + j]! += aik * b.data[k * b.cols + j]!;
    }
  }
  return out;
}

export function transpose(a: Mat): Mat {
  const out = mat(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j]!;
  return out;
}

/** Thin QR by modified Gram–Schmidt with re-orthogonalisation: a [m, n] (m >= n) = Q [m, n] · R [n, n]. */
export function qr(a: Mat): { q: Mat; r: Mat } {
  const { rows: m, cols: n } = a;
  const q = mat(m, n);
  const r = mat(n, n);
  const col = (j: number) => Float64Array.from({ length: m }, (_, i) => a.data[i * n + j]!);
  for (let j = 0; j < n; j++) {
    const v = col(j);
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 0; k < j; k++) {
        let dot = 0;
        for (let i = 0; i < m; i++) dot += q.data[i * n + k]! * v[i]!;
        r.data[k * n + j]! += dot;
        for (let i = 0; i < m; i++) v[i]! -= dot * q.data[i * n + k]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += v[i]! * v[i]!;
    norm = Math.sqrt(norm);
    r.data[j * n + j] = norm;
    if (norm > 1e-300) for (let i = 0; i < m; i++) q.data[i * n + j] = v[i]! / norm;
  }
  return { q, r };
}

/**
 * SVD of a small square matrix by one-sided Jacobi: a = U · diag(s) · Vᵀ, singular values descending. Fixed sweep
 * order, so results are deterministic.
 */
export function svd(a: Mat): { u: Mat; s: Float64Array; v: Mat } {
  const n = a.cols;
  const m = a.rows;
  const u = mat(m, n, Float64Array.from(a.data));
  const v = mat(n, n);
  for (let i = 0; i < n; i++) v.data[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          const up = u.data[i * n + p]!;
          const uq = u.data[i * n + q]!;
          alpha += up * up;
          beta += uq * uq;
          gamma += up * uq;
        }
        if (Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta) || gamma === 0) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < m; i++) {
          const up = u.data[i * n + p]!;
          const uq = u.data[i * n + q]!;
          u.data[i * n + p] = c * up - s * uq;
          u.data[i * n + q] = s * up + c * uq;
        }
        for (let i = 0; i < n; i++) {
          const vp = v.data[i * n + p]!;
          const vq = v.data[i * n + q]!;
          v.data[i * n + p] = c * vp - s * vq;
          v.data[i * n + q] = s * vp + c * vq;
        }
      }
    }
    if (off < 1e-14) break;
  }
  const s = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let norm = 0;
    for (let i = 0; i < m; i++) norm += u.data[i * n + j]! ** 2;
    s[j] = Math.sqrt(norm);
    if (s[j]! > 1e-300) for (let i = 0; i < m; i++) u.data[i * n + j]! /= s[j]!;
  }
  // sort descending
  const order = [...s.keys()].sort((x, y) => s[y]! - s[x]! || x - y);
  const perm = (x: Mat) => {
    const out = mat(x.rows, x.cols);
    for (let i = 0; i < x.rows; i++) order.forEach((j, k) => (out.data[i * x.cols + k] = x.data[i * x.cols + j]!));
    return out;
  };
  return { u: perm(u), s: Float64Array.from(order.map((j) => s[j]!)), v: perm(v) };
}
