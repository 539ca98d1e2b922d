"""One LSTM time step's element-wise work, fused into a small C kernel (CPU, float32).

After the recurrent matmul, a normalized LSTM step is a chain of some twenty small element-wise
and row/column-reduction ops (three norms, four nonlinearities, the cell update); run one by one
each pays a dispatch and a pass over memory, and together they cost several times the matmul at
the sizes the quick profile trains. Here the forward step and the backward step are each one C
function (the norms' statistics and backward included) compiled for this machine the first time
an LSTM needs it, with the system C compiler, into a per-process temporary folder (a second or
two). Its numerics do not depend on the CPU: compiled without -ffast-math and without FMA
contraction (``FLAGS``), with exp written out and row sums in double over fixed lanes, it gives
the same bits built for SSE2, AVX2 or AVX-512 (tested; on ARM the same rules apply, untested);
the instruction set (``-march=native``) changes only its speed. Where no compiler is found, or
the tensors are not float32 on the CPU, the LSTM layers run the same step with PyTorch ops
instead (``normexp.models.lstm_cells``), which the tests hold this kernel to. Set
``NORMEXP_LSTM_KERNEL=torch`` to skip it.

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

/* exp written out (Cephes' expf: range reduction by ln 2, a degree-6 polynomial, 2^n set in
   the exponent bits; within 1 ulp of exp on the clamped range) rather than libm's: every step
   is one IEEE operation, so the compiler vectorizes it for any instruction set and each vector
   width gives the bits a scalar loop would. Overflow is clamped away; NaN stays NaN. */
#ifdef __FAST_MATH__
/* Only the benchmark's -ffast-math build (FAST_MATH_FLAGS) gets here: it would fold the
   rounding trick below (t - 1.5 * 2^23) away, so it keeps libm's expf, vectorized by libmvec. */
static inline float exp_f(float x) { return expf(x); }
#else
static inline int f2i(float f) { int i; memcpy(&i, &f, sizeof i); return i; }
static inline float i2f(int i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline float exp_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    return p * i2f((f2i(t) - 0x4B400000 + 127) << 23);
}
#endif
static inline float sigm(float x) { return 1.0f / (1.0f + exp_f(-x)); }
static inline float tanh_f(float x) {
    x = x < -15.0f ? -15.0f : x;
    x = x > 15.0f ? 15.0f : x;
    return 1.0f - 2.0f / (exp_f(2.0f * x) + 1.0f);
}

/* Row reductions in double, as LANES interleaved partial sums (GCC/clang vector types: one
   AVX-512 register, two AVX or four SSE2 ones, the same lane-wise IEEE operations each way)
   added up in a fixed order, so a sum does not depend on the instruction set; double keeps
   the F float32 terms from losing digits to the running sum. */
#define LANES 8
typedef float f8 __attribute__((vector_size(LANES * sizeof(float)), aligned(4), may_alias));
typedef double d8 __attribute__((vector_size(LANES * sizeof(double))));
#define LOAD8(p) __builtin_convertvector(*(const f8 *)(p), d8) /* unaligned, as doubles */

/* The partial sums plus tail[l] in lane l < n, added up in a fixed order. */
static inline double fold(const d8 *acc, const double *tail, int n) {
    double a[LANES];
    memcpy(a, acc, sizeof a);
    for (int l = 0; l < n; l++) a[l] += tail[l];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
/* sum_j (x_j - shift) and sum_j (x_j - shift)^2 */
static void row_moments(int F, const float *restrict x, double shift, double *s1, double *s2) {
    d8 a1 = {0}, a2 = {0};
    double t1[LANES], t2[LANES];
    int j = 0;
    for (; j + LANES <= F; j += LANES) {
        d8 d = LOAD8(x + j) - shift;
        a1 += d;
        a2 += d * d;
    }
    for (int l = 0; l < F - j; l++) {
        t1[l] = (double)x[j + l] - shift;
        t2[l] = t1[l] * t1[l];
    }
    *s1 = fold(&a1, t1, F - j);
    *s2 = fold(&a2, t2, F - j);
}
/* sum_j u_j and sum_j u_j v_j (float products, exact in double) */
static void row_dots(int F, const float *restrict u, const float *restrict v, double *s1,
                     double *s2) {
    d8 a1 = {0}, a2 = {0};
    double t1[LANES], t2[LANES];
    int j = 0;
    for (; j + LANES <= F; j += LANES) {
        d8 du = LOAD8(u + j);
        a1 += du;
        a2 += du * LOAD8(v + j);
    }
    for (int l = 0; l < F - j; l++) {
        t1[l] = (double)u[j + l];
        t2[l] = t1[l] * (double)v[j + l];
    }
    *s1 = fold(&a1, t1, F - j);
    *s2 = fold(&a2, t2, F - j);
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
            double sum, sq, mean = 0.0;
            if (kind == LAYER) {
                row_moments(F, x, 0.0, &sum, &sq);
                mean = sum / F;
            }
            row_moments(F, x, mean, &sum, &sq);
            float rstd = (float)(1.0 / sqrt(sq / F + eps));
            float m = (float)mean;
            stat[2 * b] = m;
            stat[2 * b + 1] = rstd;
            for (int j = 0; j < F; j++) {
                float v = (x[j] - m) * rstd * g[j] + (beta ? beta[j] : 0.0f);
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
            float *gd = scratch, *xh = scratch + F;
            for (int j = 0; j < F; j++) {
                xh[j] = (x[j] - mean) * rstd;
                gd[j] = d[j] * g[j];
            }
            if (dgamma)
                for (int j = 0; j < F; j++) dgamma[j] += d[j] * xh[j];
            if (dbeta)
                for (int j = 0; j < F; j++) dbeta[j] += d[j];
            double sum_g, sum_gx;
            row_dots(F, gd, xh, &sum_g, &sum_gx);
            float s1 = kind == LAYER ? (float)(sum_g / F) : 0.0f, s2 = (float)(sum_gx / F);
            for (int j = 0; j < F; j++) y[j] = rstd * (gd[j] - s1 - xh[j] * s2);
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


# IEEE arithmetic, each operation rounded as written: no reassociation (sums vectorize only
# across the explicit lanes of row_moments), no FMA contraction (GCC on aarch64 contracts by
# default; x86 with -mfma would), no libm call except the exactly rounded sqrt. Dropping errno
# and trap semantics changes no result; it lets the compiler inline sqrt and vectorize the
# clamps. With these flags the instruction set changes speed only, never a bit of the result
# (tests/test_lstm.py builds for each x86 level the CPU has and compares).
FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off")
NATIVE = ("-march=native",)
# The build before portable numerics, kept for the benchmark's side-by-side row only: its
# reassociated float32 reductions and FMA contraction made gradients depend on the CPU.
FAST_MATH_FLAGS = ("-O3", "-ffast-math", "-march=native")


@functools.cache
def build(flags: tuple[str, ...] = FLAGS + NATIVE) -> ctypes.CDLL | None:
    """The kernel compiled with ``flags`` (cached per process and per flag set), or None when
    no compiler is found or the build fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.info("no C compiler found: LSTM cells run their steps with PyTorch ops")
        return None
    folder = Path(tempfile.mkdtemp(prefix="normexp-lstm-"))
    src, obj, lib = (folder / f"lstm_kernel.{ext}" for ext in ("c", "o", "so"))
    src.write_text(C_SOURCE)
    # Compile and link apart: a link with -ffast-math would add crtfastmath.o, whose
    # constructor turns on flush-to-zero for the whole Python process when the library loads.
    try:
        for cmd in (
            [cc, *flags, "-fPIC", "-c", str(src), "-o", str(obj)],
            [cc, "-shared", str(obj), "-o", str(lib), "-lm"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        kernel = ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("LSTM kernel build with %s failed (%s)", " ".join(flags), exc)
        return None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a loaded library stays mapped
    kernel.lstm_fwd_step.argtypes = _FWD_ARGS
    kernel.lstm_fwd_step.restype = None
    kernel.lstm_bwd_step.argtypes = _BWD_ARGS
    kernel.lstm_bwd_step.restype = None
    return kernel


@functools.cache
def load() -> ctypes.CDLL | None:
    """The kernel the LSTM cells use, or None (no compiler, build failed, or switched off):
    built for this CPU's instruction set, or for the compiler's default target where the
    compiler knows no ``-march=native``."""
    if os.environ.get(ENV, "") == "torch":
        return None
    return build(FLAGS + NATIVE) or build(FLAGS)
