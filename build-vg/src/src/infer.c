#include "infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

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
    float *p = calloc(n, sizeof(float));
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
    return 0;
}

void infer_free(struct infer *s)
{
    free(s->k);
    memset(s, 0, sizeof(*s));
}

/* One query row against cached keys/values [lo, pos]. */
static void attend(struct infer *s, int l, int pos)
{
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
            s->att[t] = d * scale;
            mx = fmaxf(mx, s->att[t]);
        }
        for (int t = lo; t <= pos; t++) {
            s->att[t] = expf(s->att[t] - mx);
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
