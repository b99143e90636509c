#include "infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops.h"

static size_t hd_sq(const struct gpt *m)
{
    return (size_t)m->hd * (size_t)m->hd;
}

int infer_init(struct infer *s, const struct gpt *m)
{
    memset(s, 0, sizeof(*s));
    s->m = m;
    s->T = m->cfg.seq_len;
    size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.n_embd;
    size_t KV = (size_t)m->nkv * m->hd, Q = (size_t)m->nh * m->hd + 2 * KV;
    size_t F = (size_t)m->F, T = (size_t)s->T;
    size_t n = 2 * L * T * KV + 4 * C + Q + 2 * F + T + 2 +
               (size_t)m->cfg.vocab_size + (size_t)m->nh * m->hd;
    size_t nlin = m->cfg.attn == ATTN_LINEAR
                      ? L * (size_t)m->nkv * (hd_sq(m) + (size_t)m->hd) : 0;
    float *p = calloc(n + nlin, sizeof(float));
    if (!p)
        return -1;
    s->k = p;
    p += L * T * KV;
    s->v = p;
    p += L * T * KV;
    s->x = p;
    p += C;
    s->ln = p;
    p += C;
    s->tmp = p;
    p += 2 * C;
    s->qkv = p;
    p += Q;
    s->atty = p;
    p += (size_t)m->nh * m->hd;
    s->fch = p;
    p += F;
    s->fcg = p;
    p += F;
    s->att = p;
    p += T;
    s->mean = p++;
    s->rstd = p++;
    s->logits = p;
    p += (size_t)m->cfg.vocab_size;
    s->S = p;
    s->z = p + L * (size_t)m->nkv * hd_sq(m);
    return 0;
}

void infer_free(struct infer *s)
{
    free(s->k);
    memset(s, 0, sizeof(*s));
}

static float phi(float x)
{
    return x > 0.0f ? x + 1.0f : expf(x);
}

/* attn=linear: add position pos's key and value to the running sums of
 * layer l (reset at pos 0), then every query head reads its kv head's. */
static void attend_linear(struct infer *s, int l, int pos)
{
    const struct gpt *m = s->m;
    size_t hd = (size_t)m->hd, nkv = (size_t)m->nkv, A = (size_t)m->nh * hd;
    size_t KV = nkv * hd;
    int group = m->nh / m->nkv;
    float *S = s->S + (size_t)l * nkv * hd * hd, *z = s->z + (size_t)l * KV;
    if (pos == 0) {
        memset(S, 0, nkv * hd * hd * sizeof(float));
        memset(z, 0, KV * sizeof(float));
    }
    const float *k = s->qkv + A, *v = s->qkv + A + KV;
    for (size_t g = 0; g < nkv; g++)
        for (size_t i = 0; i < hd; i++) {
            float f = phi(k[g * hd + i]);
            z[g * hd + i] += f;
            for (size_t j = 0; j < hd; j++)
                S[(g * hd + i) * hd + j] += f * v[g * hd + j];
        }
    for (int h = 0; h < m->nh; h++) {
        size_t g = (size_t)(h / group);
        const float *q = s->qkv + (size_t)h * hd;
        float *y = s->atty + (size_t)h * hd, den = 1e-6f;
        memset(y, 0, hd * sizeof(float));
        for (size_t i = 0; i < hd; i++) {
            float f = phi(q[i]);
            den += f * z[g * hd + i];
            for (size_t j = 0; j < hd; j++)
                y[j] += f * S[(g * hd + i) * hd + j];
        }
        for (size_t j = 0; j < hd; j++)
            y[j] /= den;
    }
}

/* Whether position pos sees cached position t (t <= pos): the window of
 * attn=full, the visible blocks of attn=sparse. */
static int infer_sees(const struct gpt *m, int pos, int t)
{
    if (m->cfg.attn == ATTN_SPARSE) {
        int i = pos / m->cfg.attn_block, j = t / m->cfg.attn_block;
        return j + 1 >= i || j % m->cfg.attn_stride == 0;
    }
    return m->cfg.attn_window <= 0 || pos - t < m->cfg.attn_window;
}

/* One query row against cached keys/values [lo, pos]. */
static void attend(struct infer *s, int l, int pos)
{
    if (s->m->cfg.attn == ATTN_LINEAR) {
        attend_linear(s, l, pos);
        return;
    }
    const struct gpt *m = s->m;
    size_t hd = (size_t)m->hd, KV = (size_t)m->nkv * hd;
    int group = m->nh / m->nkv;
    int lo = m->cfg.attn_window > 0 ? pos - m->cfg.attn_window + 1 : 0;
    if (lo < 0)
        lo = 0;
    const float *kc = s->k + (size_t)l * s->T * KV;
    const float *vc = s->v + (size_t)l * s->T * KV;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < m->nh; h++) {
        const float *q = s->qkv + h * hd;
        size_t kvo = (size_t)(h / group) * hd;
        float mx = -INFINITY, sum = 0.0f;
        for (int t = lo; t <= pos; t++) {
            const float *k = kc + (size_t)t * KV + kvo;
            float d = 0.0f;
            for (size_t i = 0; i < hd; i++)
                d += q[i] * k[i];
            s->att[t] = infer_sees(m, pos, t) ? d * scale : -INFINITY;
            mx = fmaxf(mx, s->att[t]);
        }
        for (int t = lo; t <= pos; t++) {
            s->att[t] = s->att[t] == -INFINITY ? 0.0f
                                               : expf(s->att[t] - mx);
            sum += s->att[t];
        }
        float *y = s->atty + h * hd;
        memset(y, 0, hd * sizeof(float));
        for (int t = lo; t <= pos; t++) {
            const float *v = vc + (size_t)t * KV + kvo;
            float w = s->att[t] / sum;
            for (size_t i = 0; i < hd; i++)
                y[i] += w * v[i];
        }
    }
}

static void add_into(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

void infer_step(struct infer *s, int token, int pos)
{
    const struct gpt *m = s->m;
    size_t C = (size_t)m->cfg.n_embd, F = (size_t)m->F;
    size_t A = (size_t)m->nh * m->hd, KV = (size_t)m->nkv * m->hd;
    size_t Q = A + 2 * KV, V = (size_t)m->cfg.vocab_size;
    for (size_t i = 0; i < C; i++)
        s->x[i] = m->wte[(size_t)token * C + i] + m->wpe[(size_t)pos * C + i];
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const struct gpt_layer_w *w = &m->lw[l];
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln1w, w->ln1b, 1,
                          C);
        matmul_forward(s->qkv, s->ln, w->wqkv, w->bqkv, 1, C, Q);
        size_t at = ((size_t)l * s->T + (size_t)pos) * KV;
        memcpy(s->k + at, s->qkv + A, KV * sizeof(float));
        memcpy(s->v + at, s->qkv + A + KV, KV * sizeof(float));
        attend(s, l, pos);
        matmul_forward(s->tmp, s->atty, w->wo, w->bo, 1, A, C);
        add_into(s->x, s->tmp, C);
        layernorm_forward(s->ln, s->mean, s->rstd, s->x, w->ln2w, w->ln2b, 1,
                          C);
        matmul_forward(s->fch, s->ln, w->wfc, w->bfc, 1, C, F);
        gelu_forward(s->fcg, s->fch, F);
        matmul_forward(s->tmp, s->fcg, w->wproj, w->bproj, 1, F, C);
        add_into(s->x, s->tmp, C);
    }
    layernorm_forward(s->ln, s->mean, s->rstd, s->x, m->lnfw, m->lnfb, 1, C);
    matmul_forward(s->logits, s->ln, m->wte, NULL, 1, C, V);
}
