"""One LSTM time step's element-wise work, fused into a small C kernel (CPU, float32).

After the recurrent matmul, a normalized LSTM step is a chain of some twenty small element-wise
and row/column-reduction ops (three norms, four nonlinearities, the cell update); run one by one
each pays a dispatch and a pass over memory, and together they cost several times the matmul at
the sizes the quick profile trains. Here the forward step and the backward step are each one C
function (the norms' statistics and backward included) compiled for this machine the first time
an LSTM needs it, with the system C compiler, into a per-process temporary folder (a second or
two). Where no compiler is found, or the tensors are not float32 on the CPU, the LSTM layers run
the same step with PyTorch ops instead (``normexp.models.lstm_cells``), which the tests hold this
kernel to. Set ``NORMEXP_LSTM_KERNEL=torch`` to skip it.

Site kinds (N_x, N_h, N_c in lstm_cells' notation), with what each saves per step for the
backward in ``stat``: none; layer (per row: mean, rstd); rms (per row: rstd); batch (per column:
mean, invstd over the batch); population (per column: a fixed affine map; forward only).
"""

import ctypes
import functools
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("normexp")

KINDS = {"none": 0, "layer": 1, "rms": 2, "batch": 3, "population": 4}
ENV = "NORMEXP_LSTM_KERNEL"

C_SOURCE = r"""
#include <math.h>
#include <string.h>

enum { NONE = 0, LAYER = 1, RMS = 2, BATCH = 3, POP = 4 };

/* exp-based, so that the compiler vectorizes them with libmvec's expf */
static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float tanh_f(float x) {
    x = fminf(fmaxf(x, -15.0f), 15.0f);
    return 1.0f - 2.0f / (expf(2.0f * x) + 1.0f);
}

/* out (=, or += when add) N(a): a is (B, F), rows contiguous. */
static void site_fwd(int kind, int B, int F, const float *restrict a, const float *restrict g,
                     const float *restrict beta, const float *restrict scale,
                     const float *restrict shift, float eps, float *restrict stat,
                     float *restrict out, int add) {
    if (kind == LAYER || kind == RMS) {
        for (int b = 0; b < B; b++) {
            const float *x = a + (long)b * F;
            float *y = out + (long)b * F;
            float mean = 0.0f, var = 0.0f;
            if (kind == LAYER) {
                for (int j = 0; j < F; j++) mean += x[j];
                mean /= F;
            }
            for (int j = 0; j < F; j++) { float d = x[j] - mean; var += d * d; }
            float rstd = 1.0f / sqrtf(var / F + eps);
            stat[2 * b] = mean;
            stat[2 * b + 1] = rstd;
            for (int j = 0; j < F; j++) {
                float v = (x[j] - mean) * rstd * g[j] + (beta ? beta[j] : 0.0f);
                y[j] = add ? y[j] + v : v;
            }
        }
    } else if (kind == BATCH) {
        float *mean = stat, *invstd = stat + F;
        for (int j = 0; j < F; j++) { mean[j] = 0.0f; invstd[j] = 0.0f; }
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) mean[j] += a[(long)b * F + j];
        for (int j = 0; j < F; j++) mean[j] /= B;
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                float d = a[(long)b * F + j] - mean[j];
                invstd[j] += d * d;
            }
        for (int j = 0; j < F; j++) invstd[j] = 1.0f / sqrtf(invstd[j] / B + eps);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                long k = (long)b * F + j;
                float v = (a[k] - mean[j]) * invstd[j] * g[j] + (beta ? beta[j] : 0.0f);
                out[k] = add ? out[k] + v : v;
            }
    } else if (kind == POP) {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                long k = (long)b * F + j;
                float v = a[k] * scale[j] + shift[j];
                out[k] = add ? out[k] + v : v;
            }
    } else {
        for (long k = 0; k < (long)B * F; k++) out[k] = add ? out[k] + a[k] : a[k];
    }
}

/* out = dN/da^T dn for the train-time kinds; dgamma, dbeta (when not NULL) accumulate.
   out may be dn itself. scratch holds 2F floats. */
static void site_bwd(int kind, int B, int F, const float *dn, const float *restrict a,
                     const float *restrict g, const float *restrict stat, float *restrict dgamma,
                     float *restrict dbeta, float *restrict scratch, float *out) {
    if (kind == LAYER || kind == RMS) {
        for (int b = 0; b < B; b++) {
            const float *x = a + (long)b * F;
            const float *d = dn + (long)b * F;
            float *y = out + (long)b * F;
            float mean = stat[2 * b], rstd = stat[2 * b + 1];
            float s1 = 0.0f, s2 = 0.0f;
            for (int j = 0; j < F; j++) {
                float xh = (x[j] - mean) * rstd, gj = d[j] * g[j];
                s1 += gj;
                s2 += gj * xh;
                if (dgamma) dgamma[j] += d[j] * xh;
                if (dbeta) dbeta[j] += d[j];
            }
            s1 = kind == LAYER ? s1 / F : 0.0f;
            s2 /= F;
            for (int j = 0; j < F; j++) {
                float xh = (x[j] - mean) * rstd;
                y[j] = rstd * (d[j] * g[j] - s1 - xh * s2);
            }
        }
    } else if (kind == BATCH) {
        const float *mean = stat, *invstd = stat + F;
        float *s1 = scratch, *s2 = scratch + F;
        for (int j = 0; j < F; j++) { s1[j] = 0.0f; s2[j] = 0.0f; }
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                long k = (long)b * F + j;
                float xh = (a[k] - mean[j]) * invstd[j];
                s1[j] += dn[k];
                s2[j] += dn[k] * xh;
            }
        for (int j = 0; j < F; j++) {
            if (dgamma) dgamma[j] += s2[j];
            if (dbeta) dbeta[j] += s1[j];
            s1[j] = s1[j] * g[j] / B;
            s2[j] = s2[j] * g[j] / B;
        }
        for (int b = 0; b < B; b++)
            for (int j = 0; j < F; j++) {
                long k = (long)b * F + j;
                float xh = (a[k] - mean[j]) * invstd[j];
                out[k] = invstd[j] * (dn[k] * g[j] - s1[j] - xh * s2[j]);
            }
    } else if (out != dn) {
        memcpy(out, dn, sizeof(float) * (size_t)B * F);
    }
}

void lstm_fwd_step(int B, int H, const float *ax, const float *ah, const float *c_prev,
                   int kx, const float *gx, const float *bx, const float *sx, const float *tx,
                   float *stx, int kh, const float *gh, const float *sh, const float *th,
                   float *sth, int kc, const float *gc, const float *bc, const float *sc,
                   const float *tc, float *stc, float eps, float *restrict z,
                   float *restrict c, float *restrict tm, float *restrict h) {
    int G = 4 * H;
    site_fwd(kx, B, G, ax, gx, bx, sx, tx, eps, stx, z, 0);
    site_fwd(kh, B, G, ah, gh, 0, sh, th, eps, sth, z, 1);
    for (int b = 0; b < B; b++) {
        float *zr = z + (long)b * G;
        for (int j = 0; j < 3 * H; j++) zr[j] = sigm(zr[j]);
        for (int j = 3 * H; j < G; j++) zr[j] = tanh_f(zr[j]);
        const float *cp = c_prev + (long)b * H;
        float *cr = c + (long)b * H;
        for (int k = 0; k < H; k++) cr[k] = zr[H + k] * cp[k] + zr[k] * zr[3 * H + k];
    }
    site_fwd(kc, B, H, c, gc, bc, sc, tc, eps, stc, tm, 0);
    for (int b = 0; b < B; b++) {
        const float *o = z + (long)b * G + 2 * H;
        float *t = tm + (long)b * H, *hr = h + (long)b * H;
        for (int k = 0; k < H; k++) { t[k] = tanh_f(t[k]); hr[k] = o[k] * t[k]; }
    }
}

void lstm_bwd_step(int B, int H, const float *dh_rec, const float *dh_out, float *dc_carry,
                   const float *z,
                   const float *c, const float *c_prev, const float *tm, const float *ax,
                   const float *ah, int kx, const float *gx, const float *stx, float *dgx,
                   float *dbx, int kh, const float *gh, const float *sth, float *dgh, int kc,
                   const float *gc, const float *stc, float *dgc, float *dbc, float *dm,
                   float *dz, float *scratch, float *dax, float *dah) {
    int G = 4 * H;
    for (int b = 0; b < B; b++) {
        const float *zr = z + (long)b * G, *t = tm + (long)b * H;
        const float *d1 = dh_rec + (long)b * H, *d2 = dh_out + (long)b * H;
        float *dzr = dz + (long)b * G, *dmr = dm + (long)b * H;
        for (int k = 0; k < H; k++) {
            float o = zr[2 * H + k], d = d1[k] + d2[k];  /* from step t+1 and from the output */
            dzr[2 * H + k] = d * t[k] * o * (1.0f - o);
            dmr[k] = d * o * (1.0f - t[k] * t[k]);
        }
    }
    site_bwd(kc, B, H, dm, c, gc, stc, dgc, dbc, scratch, dm);
    for (int b = 0; b < B; b++) {
        const float *zr = z + (long)b * G, *cp = c_prev + (long)b * H;
        float *dzr = dz + (long)b * G, *dcr = dc_carry + (long)b * H;
        const float *dmr = dm + (long)b * H;
        for (int k = 0; k < H; k++) {
            float i = zr[k], f = zr[H + k], g = zr[3 * H + k];
            float dc = dmr[k] + dcr[k];
            dzr[k] = dc * g * i * (1.0f - i);
            dzr[H + k] = dc * cp[k] * f * (1.0f - f);
            dzr[3 * H + k] = dc * i * (1.0f - g * g);
            dcr[k] = dc * f;
        }
    }
    site_bwd(kx, B, G, dz, ax, gx, stx, dgx, dbx, scratch, dax);
    site_bwd(kh, B, G, dz, ah, gh, sth, dgh, 0, scratch, dah);
}
"""

_FWD_ARGS = (
    [ctypes.c_int] * 2
    + [ctypes.c_void_p] * 3
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 5
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 4
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 5
    + [ctypes.c_float]
    + [ctypes.c_void_p] * 4
)
_BWD_ARGS = (
    [ctypes.c_int] * 2
    + [ctypes.c_void_p] * 9
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 4
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 3
    + [ctypes.c_int]
    + [ctypes.c_void_p] * 9
)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel, or None (no compiler, build failed, or switched off)."""
    if os.environ.get(ENV, "") == "torch":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler found: LSTM cells run their steps with PyTorch ops")
        return None
    folder = Path(tempfile.mkdtemp(prefix="normexp-lstm-"))
    src, lib = folder / "lstm_kernel.c", folder / "lstm_kernel.so"
    src.write_text(C_SOURCE)
    # -ffast-math lets the compiler vectorize expf (glibc's libmvec); inputs are clamped
    # where exp could overflow. -march=native: built for, and only used on, this machine.
    flags = ["-O3", "-ffast-math", "-march=native", "-fPIC", "-shared"]
    try:
        subprocess.run(
            [cc, *flags, str(src), "-o", str(lib), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        kernel = ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("LSTM kernel build failed (%s): running the steps with PyTorch ops", exc)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped
    kernel.lstm_fwd_step.argtypes = _FWD_ARGS
    kernel.lstm_fwd_step.restype = None
    kernel.lstm_bwd_step.argtypes = _BWD_ARGS
    kernel.lstm_bwd_step.restype = None
    return kernel
