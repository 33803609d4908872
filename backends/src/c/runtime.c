/* ---- cc-compile C runtime: weight access, packed GEMM, conv, pools, norms ---- */

/* Weight kinds: plain f32, integer codes (dequantized as (code - zero point) * scale,
   per axis or per block), codebook indices (centroid tables, one or per channel). */
enum { CC_F32 = 0, CC_I8 = 1, CC_U8 = 2, CC_I4 = 3, CC_U4 = 4, CC_CB8 = 5, CC_CB4 = 6 };

/* A weight (or an activation viewed as one): for codes, `dim` is the extent of the
   scale axis, `inner` the elements after it and `block` the block length (0: one
   scale per axis index); for codebooks `block` is the table length. */
typedef struct {
    int kind;
    const float *f;
    const uint8_t *codes;
    const float *scale;
    const uint8_t *zp;
    long dim, inner, block;
} cc_w;

/* 2-D convolution geometry (1-D convs use h = kh = oh = 1). */
typedef struct {
    long n, c, h, w, m, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups;
} cc_conv;

/* A 2-D view of a weight: element (i, j) is flat index off + i*rs + j*cs; or, when
   `conv` is set, the implicit im2col matrix of the image `img` (one group): row
   (ci*kh + ky)*kw + kx, column oy*ow + ox; or, when `packed` is set, a left operand
   stored pre-packed (k block after k block, each as cc_pack_a writes it). */
typedef struct {
    const cc_w *w;
    long off, rs, cs;
    const cc_conv *conv;
    const float *img;
    const float *packed; /* A only: already in cc_pack_a's layout, all k blocks */
} cc_mat;

/* An f32 array viewed as a weight. */
static inline cc_w cc_f32w(const float *f)
{
    cc_w w;
    w.kind = CC_F32;
    w.f = f;
    w.codes = 0;
    w.scale = 0;
    w.zp = 0;
    w.dim = w.inner = 1;
    w.block = 0;
    return w;
}

static inline int cc_code(int kind, const uint8_t *p, long i)
{
    int v;
    switch (kind) {
    case CC_I8:
        return (int)(int8_t)p[i];
    case CC_U8:
    case CC_CB8:
        return (int)p[i];
    case CC_I4:
        v = (p[i >> 1] >> ((i & 1) * 4)) & 15;
        return v >= 8 ? v - 16 : v;
    default:
        return (p[i >> 1] >> ((i & 1) * 4)) & 15;
    }
}

static inline float cc_w_get(const cc_w *w, long i)
{
    long a, si;
    int z;
    if (w->kind == CC_F32)
        return w->f[i];
    a = (i / w->inner) % w->dim;
    if (w->kind >= CC_CB8)
        return w->scale[a * w->block + cc_code(w->kind, w->codes, i)];
    si = a;
    if (w->block) {
        long outer = i / (w->dim * w->inner), rest = i % w->inner;
        si = (outer * ((w->dim + w->block - 1) / w->block) + a / w->block) * w->inner + rest;
    }
    z = w->zp ? cc_code(w->kind, w->zp, si) : 0;
    return (float)(cc_code(w->kind, w->codes, i) - z) * w->scale[si];
}

/* Decodes the n consecutive elements of w from flat index i0 into out (the scale
   index is tracked incrementally: no division per element). */
static inline void cc_w_decode(const cc_w *w, long i0, long n, float *out)
{
    long t, inner = w->inner, dim = w->dim;
    long rest = i0 % inner, a = (i0 / inner) % dim, outer = i0 / (dim * inner);
    long nb = w->block ? (dim + w->block - 1) / w->block : 0;
    if (w->kind == CC_F32) {
        for (t = 0; t < n; t++)
            out[t] = w->f[i0 + t];
        return;
    }
    for (t = 0; t < n; t++) {
        if (w->kind >= CC_CB8) {
            out[t] = w->scale[a * w->block + cc_code(w->kind, w->codes, i0 + t)];
        } else {
            long si = w->block ? (outer * nb + a / w->block) * inner + rest : a;
            int z = w->zp ? cc_code(w->kind, w->zp, si) : 0;
            out[t] = (float)(cc_code(w->kind, w->codes, i0 + t) - z) * w->scale[si];
        }
        if (++rest == inner) {
            rest = 0;
            if (++a == dim) {
                a = 0;
                outer++;
            }
        }
    }
}

#define CC_MR 6
#define CC_NR 16
#define CC_KC 256
#define CC_NC 1024

/* Packs the MR-row panel of A starting at row i0, columns [k0, k0 + kc), into its
   place in dst (dst[p][k][MR]); rows past m are zeros. */
static inline void cc_pack_a_panel(const cc_mat *A, long m, long k0, long kc, long i0, float *dst)
{
    long i, k;
    float *d = dst + (i0 / CC_MR) * kc * CC_MR;
    long mr = m - i0 < CC_MR ? m - i0 : CC_MR;
    if (A->w->kind == CC_F32 && A->cs == 1 && mr == CC_MR) {
        const float *s0 = A->w->f + A->off + i0 * A->rs + k0;
        const float *s1 = s0 + A->rs, *s2 = s1 + A->rs, *s3 = s2 + A->rs;
        const float *s4 = s3 + A->rs, *s5 = s4 + A->rs;
        for (k = 0; k < kc; k++) {
            float *dk = d + k * CC_MR;
            dk[0] = s0[k];
            dk[1] = s1[k];
            dk[2] = s2[k];
            dk[3] = s3[k];
            dk[4] = s4[k];
            dk[5] = s5[k];
        }
        return;
    }
    for (i = 0; i < CC_MR; i++) {
        long row = i0 + i;
        if (row >= m) {
            for (k = 0; k < kc; k++)
                d[k * CC_MR + i] = 0.0f;
        } else if (A->w->kind == CC_F32) {
            const float *s = A->w->f + A->off + row * A->rs + k0 * A->cs;
            for (k = 0; k < kc; k++)
                d[k * CC_MR + i] = s[k * A->cs];
        } else if (A->cs == 1) {
            float tmp[CC_KC];
            cc_w_decode(A->w, A->off + row * A->rs + k0, kc, tmp);
            for (k = 0; k < kc; k++)
                d[k * CC_MR + i] = tmp[k];
        } else {
            long base = A->off + row * A->rs + k0 * A->cs;
            for (k = 0; k < kc; k++)
                d[k * CC_MR + i] = cc_w_get(A->w, base + k * A->cs);
        }
    }
}

/* Packs rows [0, m) x columns [k0, k0 + kc) of A as MR-row panels: dst[p][k][MR].
   Panels are independent: with OpenMP, threads pack (and decode) different panels. */
static inline void cc_pack_a(const cc_mat *A, long m, long k0, long kc, float *dst)
{
    long p, mp = (m + CC_MR - 1) / CC_MR;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (m * kc > 16384)
#endif
    for (p = 0; p < mp; p++)
        cc_pack_a_panel(A, m, k0, kc, p * CC_MR, dst);
}

/* Cuts one gathered row of nc values (row k of the block) into the NR-column panels. */
static inline void cc_panel_row(const float *row, long k, long kc, long nc, float *dst)
{
    long jp, j;
    for (jp = 0; jp < nc; jp += CC_NR) {
        float *dk = dst + (jp / CC_NR) * kc * CC_NR + k * CC_NR;
        long nr = nc - jp < CC_NR ? nc - jp : CC_NR;
        for (j = 0; j < nr; j++)
            dk[j] = row[jp + j];
        for (j = nr; j < CC_NR; j++)
            dk[j] = 0.0f;
    }
}

/* Implicit im2col of row k of the block: kernel tap (ci, ky, kx) of block row k0 + k
   over the output positions j0 .. j0+nc, gathered a run of one output row at a time
   (zeros where the tap falls in the padding), then cut into panels. */
static inline void cc_pack_conv_row(const cc_mat *B, long k0, long k, long kc, long j0, long nc,
                                    float *dst)
{
    const cc_conv *p = B->conv;
    float row[CC_NC];
    long r = k0 + k, kx = r % p->kw, ky = (r / p->kw) % p->kh, ci = r / (p->kw * p->kh);
    const float *s = B->img + ci * p->h * p->w;
    long pos = j0, end = j0 + nc;
    while (pos < end) {
        long oy = pos / p->ow, ox0 = pos % p->ow;
        long ox1 = p->ow < ox0 + (end - pos) ? p->ow : ox0 + (end - pos);
        long iy = oy * p->sh - p->ph + ky * p->dh, ox;
        float *d = row + (pos - j0);
        if (iy < 0 || iy >= p->h) {
            for (ox = ox0; ox < ox1; ox++)
                d[ox - ox0] = 0.0f;
        } else {
            long off = kx * p->dw - p->pw, lo_x, hi_x;
            const float *sr = s + iy * p->w + off;
            lo_x = off >= 0 ? 0 : (-off + p->sw - 1) / p->sw;
            hi_x = p->w - 1 - off < 0 ? 0 : (p->w - 1 - off) / p->sw + 1;
            lo_x = lo_x < ox0 ? ox0 : lo_x > ox1 ? ox1 : lo_x;
            hi_x = hi_x > ox1 ? ox1 : hi_x < lo_x ? lo_x : hi_x;
            for (ox = ox0; ox < lo_x; ox++)
                d[ox - ox0] = 0.0f;
            if (p->sw == 1)
                for (ox = lo_x; ox < hi_x; ox++)
                    d[ox - ox0] = sr[ox];
            else
                for (ox = lo_x; ox < hi_x; ox++)
                    d[ox - ox0] = sr[ox * p->sw];
            for (ox = hi_x; ox < ox1; ox++)
                d[ox - ox0] = 0.0f;
        }
        pos += ox1 - ox0;
    }
    cc_panel_row(row, k, kc, nc, dst);
}

/* Row k of the block from a row-major B (contiguous reads, decoded first for
   compressed weights), cut into panels. */
static inline void cc_pack_dense_row(const cc_mat *B, long k0, long k, long kc, long j0, long nc,
                                     float *dst)
{
    float row[CC_NC];
    const float *s = row;
    if (B->w->kind == CC_F32)
        s = B->w->f + B->off + (k0 + k) * B->rs + j0;
    else
        cc_w_decode(B->w, B->off + (k0 + k) * B->rs + j0, nc, row);
    cc_panel_row(s, k, kc, nc, dst);
}

/* Packs rows [k0, k0 + kc) x columns [j0, j0 + nc) of B as NR-column panels:
   dst[p][k][NR]. Rows are independent: with OpenMP, threads pack different rows. */
static inline void cc_pack_b(const cc_mat *B, long k0, long kc, long j0, long nc, float *dst)
{
    long jp, k, j;
    if (B->conv) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (kc * nc > 16384)
#endif
        for (k = 0; k < kc; k++)
            cc_pack_conv_row(B, k0, k, kc, j0, nc, dst);
        return;
    }
    if (B->rs == 1 && B->cs != 1) {
        /* Columns are contiguous (a transposed weight): decode one column at a time. */
        float tmp[CC_KC];
        for (j = 0; j < nc; j++) {
            cc_w_decode(B->w, B->off + k0 + (j0 + j) * B->cs, kc, tmp);
            for (k = 0; k < kc; k++)
                dst[(j / CC_NR) * kc * CC_NR + k * CC_NR + j % CC_NR] = tmp[k];
        }
        for (j = nc; j % CC_NR; j++)
            for (k = 0; k < kc; k++)
                dst[(j / CC_NR) * kc * CC_NR + k * CC_NR + j % CC_NR] = 0.0f;
        return;
    }
    if (B->cs == 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (kc * nc > 16384)
#endif
        for (k = 0; k < kc; k++)
            cc_pack_dense_row(B, k0, k, kc, j0, nc, dst);
        return;
    }
    for (jp = 0; jp < nc; jp += CC_NR) {
        float *d = dst + (jp / CC_NR) * kc * CC_NR;
        long nr = nc - jp < CC_NR ? nc - jp : CC_NR;
        for (k = 0; k < kc; k++) {
            long base = B->off + (k0 + k) * B->rs + (j0 + jp) * B->cs;
            float *dk = d + k * CC_NR;
            if (B->w->kind == CC_F32 && B->cs == 1) {
                const float *s = B->w->f + base;
                for (j = 0; j < nr; j++)
                    dk[j] = s[j];
            } else if (B->w->kind == CC_F32) {
                const float *s = B->w->f + base;
                for (j = 0; j < nr; j++)
                    dk[j] = s[j * B->cs];
            } else {
                for (j = 0; j < nr; j++)
                    dk[j] = cc_w_get(B->w, base + j * B->cs);
            }
            for (j = nr; j < CC_NR; j++)
                dk[j] = 0.0f;
        }
    }
}

/* c[MR x NR] (leading dimension ldc, only mr x nr stored) += a-panel * b-panel. With
   GCC or Clang the accumulators are vector registers (vector extension, portable to any
   target); otherwise plain loops. */
#if defined(__GNUC__) && !defined(CC_PLAIN_KERNEL)
typedef float cc_vec __attribute__((vector_size(64)));
static inline void cc_kernel(long kc, const float *restrict a, const float *restrict b,
                             float *restrict c, long ldc, long mr, long nr)
{
    cc_vec c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0}, c4 = {0}, c5 = {0}, bv;
    float out[CC_MR][CC_NR];
    long k, i, j;
    for (k = 0; k < kc; k++) {
        const float *ak = a + k * CC_MR;
        memcpy(&bv, b + k * CC_NR, sizeof bv);
        c0 += ak[0] * bv;
        c1 += ak[1] * bv;
        c2 += ak[2] * bv;
        c3 += ak[3] * bv;
        c4 += ak[4] * bv;
        c5 += ak[5] * bv;
    }
    if (mr == CC_MR && nr == CC_NR) {
        cc_vec t;
        memcpy(&t, c, sizeof t); t += c0; memcpy(c, &t, sizeof t);
        memcpy(&t, c + ldc, sizeof t); t += c1; memcpy(c + ldc, &t, sizeof t);
        memcpy(&t, c + 2 * ldc, sizeof t); t += c2; memcpy(c + 2 * ldc, &t, sizeof t);
        memcpy(&t, c + 3 * ldc, sizeof t); t += c3; memcpy(c + 3 * ldc, &t, sizeof t);
        memcpy(&t, c + 4 * ldc, sizeof t); t += c4; memcpy(c + 4 * ldc, &t, sizeof t);
        memcpy(&t, c + 5 * ldc, sizeof t); t += c5; memcpy(c + 5 * ldc, &t, sizeof t);
        return;
    }
    memcpy(out[0], &c0, sizeof c0);
    memcpy(out[1], &c1, sizeof c1);
    memcpy(out[2], &c2, sizeof c2);
    memcpy(out[3], &c3, sizeof c3);
    memcpy(out[4], &c4, sizeof c4);
    memcpy(out[5], &c5, sizeof c5);
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++)
            c[i * ldc + j] += out[i][j];
}
#else
static inline void cc_kernel(long kc, const float *restrict a, const float *restrict b,
                             float *restrict c, long ldc, long mr, long nr)
{
    float acc[CC_MR][CC_NR];
    long k, i, j;
    for (i = 0; i < CC_MR; i++)
        for (j = 0; j < CC_NR; j++)
            acc[i][j] = 0.0f;
    for (k = 0; k < kc; k++) {
        const float *ak = a + k * CC_MR, *bk = b + k * CC_NR;
        for (i = 0; i < CC_MR; i++) {
            float av = ak[i];
            for (j = 0; j < CC_NR; j++)
                acc[i][j] += av * bk[j];
        }
    }
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++)
            c[i * ldc + j] += acc[i][j];
}
#endif

/* Floats of scratch cc_gemm needs for an m x k A. */
#define CC_GEMM_SCRATCH(m, k) ((((m) + CC_MR - 1) / CC_MR) * CC_MR * CC_KC + (long)CC_KC * CC_NC)

/* C[m x n] (leading dimension ldc) += A[m x k] * B[k x n]. */
static inline void cc_gemm(long m, long n, long k, const cc_mat *A, const cc_mat *B, float *C,
                           long ldc, float *scratch)
{
    long mp = (m + CC_MR - 1) / CC_MR;
    float *bp = scratch + mp * CC_MR * CC_KC;
    long j0, k0;
    for (k0 = 0; k0 < k; k0 += CC_KC) {
        long kc = k - k0 < CC_KC ? k - k0 : CC_KC;
        const float *ap = scratch;
        if (A->packed)
            ap = A->packed + mp * CC_MR * k0;
        else
            cc_pack_a(A, m, k0, kc, scratch);
        for (j0 = 0; j0 < n; j0 += CC_NC) {
            long nc = n - j0 < CC_NC ? n - j0 : CC_NC;
            long np = (nc + CC_NR - 1) / CC_NR, t;
            cc_pack_b(B, k0, kc, j0, nc, bp);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (mp * np > 8)
#endif
            for (t = 0; t < mp * np; t++) {
                long ip = t / np, jp = t % np;
                long i0 = ip * CC_MR, jj = jp * CC_NR;
                long mr = m - i0 < CC_MR ? m - i0 : CC_MR;
                long nr = nc - jj < CC_NR ? nc - jj : CC_NR;
                cc_kernel(kc, ap + ip * kc * CC_MR, bp + jp * kc * CC_NR,
                          C + i0 * ldc + j0 + jj, ldc, mr, nr);
            }
        }
    }
}

/* Clamps n floats to [lo, hi] in place (a fused Relu or Clip); nothing when both
   bounds are infinite. */
static inline void cc_clamp(float *y, long n, float lo, float hi)
{
    long i;
    if (lo == -INFINITY && hi == INFINITY)
        return;
    for (i = 0; i < n; i++) {
        float v = y[i];
        v = v < lo ? lo : v;
        y[i] = v > hi ? hi : v;
    }
}

/* Depthwise conv (groups == c == m): per channel and output row, one pass per kernel
   tap over the output positions whose input lies inside the image (no bounds checks
   in the inner loop). */
static inline void cc_conv_depthwise(const cc_conv *p, const float *x, const cc_w *w,
                                     const float *bias, float *y, float lo, float hi)
{
    long n, c;
    for (n = 0; n < p->n; n++) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
        for (c = 0; c < p->c; c++) {
            float k[64];
            long t, oy, ox, ky, kx, nk = p->kh * p->kw;
            const float *s = x + (n * p->c + c) * p->h * p->w;
            float *d = y + (n * p->c + c) * p->oh * p->ow;
            float b = bias ? bias[c] : 0.0f;
            for (t = 0; t < nk; t++)
                k[t] = cc_w_get(w, c * nk + t);
            for (oy = 0; oy < p->oh; oy++) {
                float *restrict dr = d + oy * p->ow;
                for (ox = 0; ox < p->ow; ox++)
                    dr[ox] = b;
                for (ky = 0; ky < p->kh; ky++) {
                    long iy = oy * p->sh - p->ph + ky * p->dh;
                    if (iy < 0 || iy >= p->h)
                        continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        long off = kx * p->dw - p->pw, lo_x, hi_x;
                        const float *restrict sr = s + iy * p->w + off;
                        float wk = k[ky * p->kw + kx];
                        /* ox*sw + off in [0, w) */
                        lo_x = off >= 0 ? 0 : (-off + p->sw - 1) / p->sw;
                        hi_x = p->w - 1 - off < 0 ? 0 : (p->w - 1 - off) / p->sw + 1;
                        if (hi_x > p->ow)
                            hi_x = p->ow;
                        if (p->sw == 1)
                            for (ox = lo_x; ox < hi_x; ox++)
                                dr[ox] += wk * sr[ox];
                        else
                            for (ox = lo_x; ox < hi_x; ox++)
                                dr[ox] += wk * sr[ox * p->sw];
                    }
                }
            }
            cc_clamp(d, p->oh * p->ow, lo, hi);
        }
    }
}

/* Conv as GEMM per image and group (the image packed straight into GEMM panels,
   implicit im2col), then the fused clamp [lo, hi]; bias may be NULL; `wpacked`, when
   not NULL, is the f32 weight pre-packed per group as cc_gemm's left operand. */
static inline void cc_conv2d(const cc_conv *p, const float *x, const cc_w *w, const float *bias,
                             float *y, float *scratch, float lo, float hi, const float *wpacked)
{
    long cg = p->c / p->groups, mg = p->m / p->groups, kg = cg * p->kh * p->kw;
    long hw = p->oh * p->ow, n, g, i, j;
    int direct = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->ph == 0 &&
                 p->pw == 0 && p->oh == p->h && p->ow == p->w;
    if (p->groups == p->c && p->m == p->c && p->kh * p->kw <= 64) {
        cc_conv_depthwise(p, x, w, bias, y, lo, hi);
        return;
    }
    for (n = 0; n < p->n; n++)
        for (g = 0; g < p->groups; g++) {
            const float *xg = x + (n * p->c + g * cg) * p->h * p->w;
            float *yg = y + (n * p->m + g * mg) * hw;
            cc_w bw = cc_f32w(xg);
            cc_mat A, B;
            A.w = w;
            A.off = g * mg * kg;
            A.rs = kg;
            A.cs = 1;
            A.conv = 0;
            A.img = 0;
            A.packed = wpacked ? wpacked + g * ((mg + CC_MR - 1) / CC_MR) * CC_MR * kg : 0;
            B.w = &bw;
            B.off = 0;
            B.rs = hw;
            B.cs = 1;
            B.conv = direct ? (const cc_conv *)0 : p;
            B.img = xg;
            B.packed = 0;
            for (i = 0; i < mg; i++) {
                float b = bias ? bias[g * mg + i] : 0.0f;
                for (j = 0; j < hw; j++)
                    yg[i * hw + j] = b;
            }
            cc_gemm(mg, hw, kg, &A, &B, yg, hw, scratch);
            cc_clamp(yg, mg * hw, lo, hi);
        }
}

/* MaxPool over N*C planes of h x w. */
static inline void cc_maxpool(const cc_conv *p, const float *x, float *y)
{
    long pl, oy, ox, ky, kx;
    for (pl = 0; pl < p->n * p->c; pl++) {
        const float *s = x + pl * p->h * p->w;
        float *d = y + pl * p->oh * p->ow;
        for (oy = 0; oy < p->oh; oy++)
            for (ox = 0; ox < p->ow; ox++) {
                float m = -INFINITY;
                for (ky = 0; ky < p->kh; ky++) {
                    long iy = oy * p->sh - p->ph + ky * p->dh;
                    if (iy < 0 || iy >= p->h)
                        continue;
                    for (kx = 0; kx < p->kw; kx++) {
                        long ix = ox * p->sw - p->pw + kx * p->dw;
                        if (ix >= 0 && ix < p->w && (s[iy * p->w + ix] > m || s[iy * p->w + ix] != s[iy * p->w + ix]))
                            m = s[iy * p->w + ix];
                    }
                }
                d[oy * p->ow + ox] = m;
            }
    }
}

/* Reduction of x[outer][n][inner] over n: 0 sum, 1 mean, 2 max, 3 min. */
static inline void cc_reduce(const float *x, float *y, long outer, long n, long inner, int op)
{
    long o, i, k;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const float *s = x + o * n * inner + i;
            float acc = op == 2 ? -INFINITY : op == 3 ? INFINITY : 0.0f;
            for (k = 0; k < n; k++) {
                float v = s[k * inner];
                if (op == 2)
                    acc = v > acc ? v : acc;
                else if (op == 3)
                    acc = v < acc ? v : acc;
                else
                    acc += v;
            }
            y[o * inner + i] = op == 1 ? acc / (float)n : acc;
        }
}

/* Softmax of x[outer][n][inner] over n. */
static inline void cc_softmax(const float *x, float *y, long outer, long n, long inner)
{
    long o, i, k;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const float *s = x + o * n * inner + i;
            float *d = y + o * n * inner + i;
            float m = -INFINITY, sum = 0.0f;
            for (k = 0; k < n; k++)
                m = s[k * inner] > m ? s[k * inner] : m;
            for (k = 0; k < n; k++) {
                d[k * inner] = expf(s[k * inner] - m);
                sum += d[k * inner];
            }
            for (k = 0; k < n; k++)
                d[k * inner] /= sum;
        }
}

/* LayerNormalization of rows x[outer][n]; bias may be NULL. */
static inline void cc_layernorm(const float *x, const float *scale, const float *bias, float *y,
                                long outer, long n, float eps)
{
    long o, k;
    for (o = 0; o < outer; o++) {
        const float *s = x + o * n;
        float *d = y + o * n;
        double mean = 0.0, var = 0.0;
        float inv;
        for (k = 0; k < n; k++)
            mean += s[k];
        mean /= (double)n;
        for (k = 0; k < n; k++)
            var += ((double)s[k] - mean) * ((double)s[k] - mean);
        var /= (double)n;
        inv = (float)(1.0 / sqrt(var + (double)eps));
        for (k = 0; k < n; k++)
            d[k] = ((s[k] - (float)mean) * inv) * scale[k] + (bias ? bias[k] : 0.0f);
    }
}
/* ---- end of runtime ---- */
