/*
 * mem_report.c - per-rank memory by role, computed, next to the measured
 * RSS (mem_report.h).
 */
#include "mem_report.h"

#include "json.h"
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Resident bytes now, from /proc/self/statm (0 where unavailable). */
static double rss_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (!f)
        return 0.0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

void mem_report_rank(const struct trainer *tr, struct mem_report *r)
{
    const double F = sizeof(float);
    const struct gpt *m = &tr->m;
    double whole = (double)m->tt.total * F;
    memset(r, 0, sizeof(*r));
    /* the model's arenas that exist (ZeRO and offload leave some out) */
    r->params = m->params ? whole : 0.0;
    if (m->params_h) /* bf16: the weight copy */
        r->params += (double)m->tt.total * sizeof(bf16);
    r->grads = m->grads ? whole : 0.0;
    r->optim = (m->m ? whole : 0.0) + (m->v ? whole : 0.0);
    if (tr->has_zx) { /* plus the shards, slots and buffers */
        r->params += (double)tr->zx.bytes_params;
        r->grads += (double)tr->zx.bytes_grads;
        r->optim += (double)tr->zx.bytes_optim;
        r->comm = (double)tr->zx.bytes_comm;
        r->offload_file = (double)tr->zx.bytes_file;
    }
    r->acts = (double)tr->pl.saved_bytes;
    r->scratch = (double)(tr->pl.act_bytes - tr->pl.saved_bytes -
                          tr->pl.link_bytes);
    r->comm += (double)tr->pl.link_bytes;
    if (tr->has_tp)
        r->comm += (double)tr->tpc.scratch_bytes;
    for (int i = 0; tr->has_dp && i < tr->bk.nb; i++)
        r->comm += (double)tr->bk.b[i].scratch_bytes +
                   (double)tr->bk.b[i].cctx.state_n * F;
    r->total = r->params + r->grads + r->optim + r->acts + r->scratch +
               r->comm;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->rss_peak = (double)ru.ru_maxrss * 1024.0;
    r->rss_now = rss_now();
}

void mem_report_gather(const struct trainer *tr, struct mem_report *all)
{
    struct mem_report mine;
    mem_report_rank(tr, &mine);
    const int nf = (int)(sizeof(mine) / sizeof(double));
    MPI_Gather(&mine, nf, MPI_DOUBLE, all, nf, MPI_DOUBLE, 0, tr->g.world);
}

void mem_report_print(FILE *out, const struct config *c,
                      const struct mem_report *all, int n)
{
    const double mb = 1.0 / 1048576.0;
    int pr = 3; /* decimals: a small model's roles still differ visibly */
    for (int i = 0; i < n; i++)
        pr = all[i].total * mb >= 100.0 ? 1 : pr;
    fprintf(out, "memory per rank, MiB (computed from the allocations; "
            "zero=%d, recompute=%s, offload=%s):\n", c->zero, c->recompute,
            c->offload);
    fprintf(out, "  rank   params    grads  optimizer  activations  scratch"
            "     comm |    total | RSS peak      now\n");
    for (int i = 0; i < n; i++) {
        const struct mem_report *r = &all[i];
        fprintf(out, "  %4d %8.*f %8.*f %10.*f %12.*f %8.*f %8.*f | %8.*f | "
                "%8.1f %8.1f", i, pr, r->params * mb, pr, r->grads * mb, pr,
                r->optim * mb, pr, r->acts * mb, pr, r->scratch * mb, pr,
                r->comm * mb, pr, r->total * mb, r->rss_peak * mb,
                r->rss_now * mb);
        if (r->offload_file > 0)
            fprintf(out, "  (+%.1f MiB of moments in the offload file)",
                    r->offload_file * mb);
        fprintf(out, "\n");
    }
    fflush(out);
}

void mem_report_banner(const struct trainer *tr, FILE *out)
{
    struct mem_report *all = tr->g.rank == 0
        ? calloc((size_t)tr->g.size, sizeof(*all)) : NULL;
    if (comm_agree(tr->g.world, tr->g.rank == 0 && !all ? -1 : 0, NULL,
                   0) < 0)
        return; /* no memory for the report on rank 0: skip it */
    mem_report_gather(tr, all);
    if (all)
        mem_report_print(out, &tr->c, all, tr->g.size);
    free(all);
}

void mem_report_json(struct json *j, const struct mem_report *all, int n)
{
    const double mb = 1.0 / 1048576.0;
    const struct mem_report *m0 = &all[0];
    const struct { const char *k; double v; } mem[] = {
        {"rss_peak_mb", m0->rss_peak}, {"params_mb", m0->params},
        {"grads_mb", m0->grads}, {"optimizer_mb", m0->optim},
        {"activations_mb", m0->acts}, {"scratch_mb", m0->scratch},
        {"comm_mb", m0->comm}, {"computed_mb", m0->total},
        {"offload_file_mb", m0->offload_file}, {"rss_now_mb", m0->rss_now},
    };
    for (size_t i = 0; i < sizeof(mem) / sizeof(mem[0]); i++)
        json_num(j, mem[i].k, mem[i].v * mb, 6);
    json_arr_begin(j, "activations_mb_per_rank");
    for (int i = 0; i < n; i++)
        json_num(j, NULL, all[i].acts * mb, 6);
    json_arr_end(j);
    json_arr_begin(j, "memory_per_rank");
    for (int i = 0; i < n; i++) {
        json_obj_begin(j, NULL);
        const struct { const char *k; double v; } rm[] = {
            {"params_mb", all[i].params}, {"grads_mb", all[i].grads},
            {"optimizer_mb", all[i].optim},
            {"activations_mb", all[i].acts}, {"scratch_mb", all[i].scratch},
            {"comm_mb", all[i].comm}, {"computed_mb", all[i].total},
            {"rss_peak_mb", all[i].rss_peak},
        };
        for (size_t k = 0; k < sizeof(rm) / sizeof(rm[0]); k++)
            json_num(j, rm[k].k, rm[k].v * mb, 6);
        json_obj_end(j);
    }
    json_arr_end(j);
}

/* ---- the budget ---------------------------------------------------------- */

/* Bytes of everything that scales with the micro-batch mb: activations,
 * scratch and pipeline links, and the tp all-reduce scratch; (size_t)-1
 * when they cannot be computed. */
static size_t mb_bytes(const struct trainer *tr, int mb)
{
    const struct config *c = &tr->c;
    enum pp_kind kind = PP_1F1B; /* as stage_init chooses */
    if (tr->g.pp > 1)
        pp_kind_parse(c->pp_schedule, &kind);
    size_t b = pipeline_bytes(&tr->m, tr->g.pp, tr->g.pp_rank, kind,
                              tr->per_rank / mb, mb, c->seq_len);
    if (b != (size_t)-1 && tr->has_tp)
        b += tr->tpc.algo->scratch(&tr->tpc.g, (size_t)mb *
                                   (size_t)c->seq_len *
                                   (size_t)tr->m.cfg.n_embd);
    return b;
}

int mem_budget_pick(const struct trainer *tr, int *mb, char *err,
                    size_t errlen)
{
    const double MiB = 1048576.0;
    double budget = (double)tr->c.mem_budget_mb * MiB;
    struct mem_report r;
    mem_report_rank(tr, &r);
    double fixed = r.total - (double)mb_bytes(tr, 1);
    double need1 = 0.0;
    for (int k = tr->per_rank; k >= 1; k--) {
        double need = -1.0;
        if (tr->per_rank % k == 0) {
            struct batch_plan pl = tr->plan;
            char why[256];
            pl.mb = k;
            size_t b = mb_bytes(tr, k);
            if (batch_plan_check(&pl, why, sizeof why) == 0 &&
                b != (size_t)-1)
                need = fixed + (double)b;
        }
        /* the largest need over the ranks; -1 anywhere: not a candidate */
        double v[2] = {need, -need};
        MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, tr->g.world);
        if (-v[1] < 0.0)
            continue;
        if (k == 1)
            need1 = v[0];
        if (v[0] <= budget) {
            *mb = k;
            return 0;
        }
    }
    snprintf(err, errlen, "micro_batch=auto: even micro_batch=1 needs "
             "%.1f MiB on some rank, above mem_budget_mb=%d (besides the "
             "activations: parameters %.1f, gradients %.1f, optimizer %.1f, "
             "communication %.1f MiB on rank %d); raise the budget, or cut "
             "the rest with zero, recompute, offload, tp or pp",
             need1 / MiB, tr->c.mem_budget_mb, r.params / MiB,
             r.grads / MiB, r.optim / MiB, r.comm / MiB, tr->g.rank);
    return -1;
}

int mem_budget_check(const struct trainer *tr, char *err, size_t errlen)
{
    const double MiB = 1048576.0;
    struct mem_report r;
    mem_report_rank(tr, &r);
    if (r.total <= (double)tr->c.mem_budget_mb * MiB)
        return 0;
    snprintf(err, errlen, "rank %d: the computed memory %.1f MiB (parameters "
             "%.1f, gradients %.1f, optimizer %.1f, activations %.1f, scratch "
             "%.1f, communication %.1f) exceeds mem_budget_mb=%d; use "
             "micro_batch=auto or a smaller micro_batch, recompute, zero or "
             "offload", tr->g.rank, r.total / MiB, r.params / MiB,
             r.grads / MiB, r.optim / MiB, r.acts / MiB, r.scratch / MiB,
             r.comm / MiB, tr->c.mem_budget_mb);
    return -1;
}
